#include "dreambooth/core/error.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"
#include "registry_builders.h"

namespace db {

using namespace registry_detail;

// AutoencoderKL (diffusers/models/autoencoders/autoencoder_kl.py + vae.py Encoder/Decoder). The
// mid-block attention is diffusers' Attention with biased to_q/to_k/to_v/to_out.0 Linear [C, C].
ParamRegistry build_vae_registry(const VaeConfig& c) {
  ParamRegistry r;
  const auto& ch = c.block_out_channels;
  const int n = int(ch.size());
  DB_CHECK(n > 0, "VAE config: empty block_out_channels");
  const int64_t top = ch[size_t(n - 1)];
  const int64_t L = c.latent_channels;

  auto add_mid = [&](const std::string& p) {
    if (c.mid_block_add_attention) {
      add_norm(r, p + ".attentions.0.group_norm", top);
      for (const char* q : {".to_q", ".to_k", ".to_v", ".to_out.0"})
        add_linear(r, p + ".attentions.0" + q, top, top);
    }
    add_resnet(r, p + ".resnets.0", top, top, 0);
    add_resnet(r, p + ".resnets.1", top, top, 0);
  };

  add_conv(r, "encoder.conv_in", ch[0], c.in_channels, 3);
  int64_t out = ch[0];
  for (int i = 0; i < n; ++i) {
    const std::string p = "encoder.down_blocks." + std::to_string(i);
    const int64_t in = out;
    out = ch[size_t(i)];
    for (int l = 0; l < c.layers_per_block; ++l)
      add_resnet(r, p + ".resnets." + std::to_string(l), l == 0 ? in : out, out, 0);
    if (i < n - 1) add_conv(r, p + ".downsamplers.0.conv", out, out, 3);
  }
  add_mid("encoder.mid_block");
  add_norm(r, "encoder.conv_norm_out", top);
  add_conv(r, "encoder.conv_out", 2 * L, top, 3);

  add_conv(r, "decoder.conv_in", top, L, 3);
  int64_t prev = top;
  for (int i = 0; i < n; ++i) {
    const std::string p = "decoder.up_blocks." + std::to_string(i);
    const int64_t o = ch[size_t(n - 1 - i)];
    for (int l = 0; l < c.layers_per_block + 1; ++l)
      add_resnet(r, p + ".resnets." + std::to_string(l), l == 0 ? prev : o, o, 0);
    if (i < n - 1) add_conv(r, p + ".upsamplers.0.conv", o, o, 3);
    prev = o;
  }
  add_mid("decoder.mid_block");
  add_norm(r, "decoder.conv_norm_out", ch[0]);
  add_conv(r, "decoder.conv_out", c.out_channels, ch[0], 3);

  if (c.use_quant_conv) add_conv(r, "quant_conv", 2 * L, 2 * L, 1);
  if (c.use_post_quant_conv) add_conv(r, "post_quant_conv", L, L, 1);
  return r;
}

}  // namespace db
