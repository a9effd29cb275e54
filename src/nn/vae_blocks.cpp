#include "dreambooth/nn/vae_blocks.h"

#include <string>

namespace db {

SpatialAttention::SpatialAttention(const ParamSet& p, int heads, int groups, float eps, float rescale)
    : group_norm(p.sub("group_norm"), groups, eps),
      attn(p, heads, false, /*upcast=*/true),
      rescale_output_factor(rescale) {}

// x [B, H, W, C] -> [B, H, W, C]
Tensor SpatialAttention::forward(Ctx& ctx, const Tensor& x) const {
  const int64_t B = x.dim(0), C = x.dim(3);
  Tensor h = group_norm.forward(ctx, x).view({B, -1, C});  // [B, H*W, C]
  h = attn.forward(ctx, h);                                // [B, H*W, C]
  Tensor y = ctx.alloc(x.shape());
  const float inv = 1.f / rescale_output_factor;
  ctx.ops.add_forward(h.view(x.shape()), x, y, inv, inv);
  return y;
}

UNetMidBlock2D::UNetMidBlock2D(const ParamSet& p, const ResnetOptions& r, int channels,
                               int attention_head_dim, bool add_attention, int num_layers) {
  resnets.emplace_back(p.sub("resnets.0"), r);
  for (int i = 0; i < num_layers; ++i) {
    if (add_attention)
      attentions.emplace_back(p.sub("attentions." + std::to_string(i)), channels / attention_head_dim,
                              r.groups, r.eps, r.output_scale_factor);
    resnets.emplace_back(p.sub("resnets." + std::to_string(i + 1)), r);
  }
}

// x [B, H, W, C] -> [B, H, W, C]
Tensor UNetMidBlock2D::forward(Ctx& ctx, const Tensor& x, const Tensor& temb) const {
  Tensor h = resnets[0].forward(ctx, x, temb);
  for (size_t i = 1; i < resnets.size(); ++i) {
    if (!attentions.empty()) h = attentions[i - 1].forward(ctx, h);
    h = resnets[i].forward(ctx, h, temb);
  }
  return h;
}

DownEncoderBlock2D::DownEncoderBlock2D(const ParamSet& p, const ResnetOptions& r, int num_layers,
                                       bool add_downsample, int padding) {
  for (int i = 0; i < num_layers; ++i) resnets.emplace_back(p.sub("resnets." + std::to_string(i)), r);
  if (add_downsample) downsamplers.emplace_back(p.sub("downsamplers.0"), padding);
}

Tensor DownEncoderBlock2D::forward(Ctx& ctx, const Tensor& x) const {
  Tensor h = x;
  for (const ResnetBlock2D& r : resnets) h = r.forward(ctx, h, Tensor());
  for (const Downsample2D& d : downsamplers) h = d.forward(ctx, h);
  return h;
}

UpDecoderBlock2D::UpDecoderBlock2D(const ParamSet& p, const ResnetOptions& r, int num_layers,
                                   bool add_upsample) {
  for (int i = 0; i < num_layers; ++i) resnets.emplace_back(p.sub("resnets." + std::to_string(i)), r);
  if (add_upsample) upsamplers.emplace_back(p.sub("upsamplers.0"));
}

Tensor UpDecoderBlock2D::forward(Ctx& ctx, const Tensor& x) const {
  Tensor h = x;
  for (const ResnetBlock2D& r : resnets) h = r.forward(ctx, h, Tensor());
  for (const Upsample2D& u : upsamplers) h = u.forward(ctx, h);
  return h;
}

}  // namespace db
