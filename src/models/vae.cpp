#include "dreambooth/models/vae.h"

#include <string>

#include "dreambooth/core/error.h"

namespace db {

AutoencoderKL::AutoencoderKL(const VaeConfig& cfg, const ParamRegistry& reg, const Tensor& flat) : cfg_(cfg) {
  ErrorContext ec("vae");
  DB_CHECK(cfg.act_fn == "silu", "unsupported act_fn '", cfg.act_fn, "' (supported: silu)");
  ParamSet p(reg, flat);
  const std::vector<int>& boc = cfg.block_out_channels;
  const size_t n = boc.size();
  ResnetOptions ro;
  ro.groups = cfg.norm_num_groups;
  ro.eps = cfg.norm_eps;

  const ParamSet e = p.sub("encoder");
  enc_conv_in_ = Conv2d(e.sub("conv_in"), Conv2dGeometry::same(1));
  for (size_t i = 0; i < n; ++i)  // Encoder: downsample_padding=0 (F.pad (0, 1, 0, 1) + stride-2 conv)
    down_.emplace_back(e.sub("down_blocks." + std::to_string(i)), ro, cfg.layers_per_block, i + 1 < n, 0);
  // UNetMidBlock2D(attention_head_dim=block_out_channels[-1]): one head over all channels
  enc_mid_ = UNetMidBlock2D(e.sub("mid_block"), ro, boc.back(), boc.back(), cfg.mid_block_add_attention);
  enc_norm_out_ = GroupNorm(e.sub("conv_norm_out"), cfg.norm_num_groups, cfg.norm_eps);
  enc_conv_out_ = Conv2d(e.sub("conv_out"), Conv2dGeometry::same(1));

  const ParamSet d = p.sub("decoder");
  dec_conv_in_ = Conv2d(d.sub("conv_in"), Conv2dGeometry::same(1));
  dec_mid_ = UNetMidBlock2D(d.sub("mid_block"), ro, boc.back(), boc.back(), cfg.mid_block_add_attention);
  for (size_t i = 0; i < n; ++i)
    up_.emplace_back(d.sub("up_blocks." + std::to_string(i)), ro, cfg.layers_per_block + 1, i + 1 < n);
  dec_norm_out_ = GroupNorm(d.sub("conv_norm_out"), cfg.norm_num_groups, cfg.norm_eps);
  dec_conv_out_ = Conv2d(d.sub("conv_out"), Conv2dGeometry::same(1));

  if (cfg.use_quant_conv) quant_conv_ = Linear(p.sub("quant_conv"));
  if (cfg.use_post_quant_conv) post_quant_conv_ = Linear(p.sub("post_quant_conv"));
}

// image [B, H, W, 3] -> moments [B, H/f, W/f, 2*latent]
Tensor AutoencoderKL::encode(Ctx& ctx, const Tensor& image) const {
  const OpsRange range(ctx.ops, "vae.encode");
  DB_CHECK(image.ndim() == 4 && image.dim(3) == cfg_.in_channels, "vae: expected image [B, H, W, ",
           cfg_.in_channels, "], got ", image.desc());
  Tensor h = enc_conv_in_.forward(ctx, image);
  for (const DownEncoderBlock2D& b : down_) h = b.forward(ctx, h);
  h = enc_mid_.forward(ctx, h, Tensor());
  h = enc_conv_out_.forward(ctx, enc_norm_out_.forward(ctx, h, Activation::SiLU));  // [B, h, w, 2*latent]
  return quant_conv_.weight.defined() ? quant_conv_.forward(ctx, h) : h;
}

// z [B, h, w, latent] -> image [B, H, W, 3]
Tensor AutoencoderKL::decode(Ctx& ctx, const Tensor& z) const {
  const OpsRange range(ctx.ops, "vae.decode");
  DB_CHECK(z.ndim() == 4 && z.dim(3) == cfg_.latent_channels, "vae: expected latents [B, h, w, ",
           cfg_.latent_channels, "], got ", z.desc());
  Tensor h = post_quant_conv_.weight.defined() ? post_quant_conv_.forward(ctx, z) : z;
  h = dec_conv_in_.forward(ctx, h);
  h = dec_mid_.forward(ctx, h, Tensor());
  for (const UpDecoderBlock2D& b : up_) h = b.forward(ctx, h);
  return dec_conv_out_.forward(ctx, dec_norm_out_.forward(ctx, h, Activation::SiLU));
}

}  // namespace db
