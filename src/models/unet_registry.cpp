// UNet2DConditionModel's state-dict names and shapes (diffusers/models/unets/unet_2d_condition.py), in
// the order diffusers' state_dict() lists them: conv_in, time_embedding, down_blocks, up_blocks,
// mid_block, conv_norm_out, conv_out (up_blocks is registered before mid_block is assigned).
#include "dreambooth/core/error.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"
#include "registry_builders.h"

namespace db {
using namespace registry_detail;

ParamRegistry build_unet_registry(const UNetConfig& c) {
  ParamRegistry r;
  const auto& ch = c.block_out_channels;
  const int n = int(ch.size());
  DB_CHECK(n > 0 && int(c.down_block_types.size()) == n && int(c.up_block_types.size()) == n &&
               int(c.num_heads.size()) == n,
           "UNet config: block lists of different lengths");
  const int64_t temb = c.time_embedding_dim();

  add_conv(r, "conv_in", ch[0], c.in_channels, 3);
  add_linear(r, "time_embedding.linear_1", temb, ch[0]);
  add_linear(r, "time_embedding.linear_2", temb, temb);

  int64_t out = ch[0];
  for (int i = 0; i < n; ++i) {
    const std::string p = "down_blocks." + std::to_string(i);
    const int64_t in = out;
    out = ch[size_t(i)];
    const bool attn = c.down_block_types[size_t(i)] == "CrossAttnDownBlock2D";
    if (attn)
      for (int l = 0; l < c.layers_per_block; ++l)
        add_transformer(r, p + ".attentions." + std::to_string(l), out, c);
    for (int l = 0; l < c.layers_per_block; ++l)
      add_resnet(r, p + ".resnets." + std::to_string(l), l == 0 ? in : out, out, temb);
    if (i < n - 1) add_conv(r, p + ".downsamplers.0.conv", out, out, 3);
  }

  int64_t prev = ch[size_t(n - 1)];
  for (int i = 0; i < n; ++i) {
    const std::string p = "up_blocks." + std::to_string(i);
    const int64_t o = ch[size_t(n - 1 - i)];
    const int64_t in = ch[size_t(std::max(n - 2 - i, 0))];
    const bool attn = c.up_block_types[size_t(i)] == "CrossAttnUpBlock2D";
    const int layers = c.layers_per_block + 1;
    if (attn)
      for (int l = 0; l < layers; ++l) add_transformer(r, p + ".attentions." + std::to_string(l), o, c);
    for (int l = 0; l < layers; ++l) {
      const int64_t skip = l == layers - 1 ? in : o;
      const int64_t res_in = l == 0 ? prev : o;
      add_resnet(r, p + ".resnets." + std::to_string(l), res_in + skip, o, temb);
    }
    if (i < n - 1) add_conv(r, p + ".upsamplers.0.conv", o, o, 3);
    prev = o;
  }

  const int64_t mid = ch[size_t(n - 1)];
  add_transformer(r, "mid_block.attentions.0", mid, c);
  add_resnet(r, "mid_block.resnets.0", mid, mid, temb);
  add_resnet(r, "mid_block.resnets.1", mid, mid, temb);

  add_norm(r, "conv_norm_out", ch[0]);
  add_conv(r, "conv_out", c.out_channels, ch[0], 3);
  return r;
}

}  // namespace db
