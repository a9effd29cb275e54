#include "dreambooth/nn/resnet_block.h"

#include "dreambooth/core/error.h"

namespace db {

ResnetBlock2D::ResnetBlock2D(const ParamSet& p, const ResnetOptions& o)
    : norm1(p.sub("norm1"), o.groups, o.eps),
      norm2(p.sub("norm2"), o.groups, o.eps),
      conv1(p.sub("conv1"), Conv2dGeometry::same(1)),
      conv2(p.sub("conv2"), Conv2dGeometry::same(1)),
      opt(o) {
  DB_CHECK(o.act == Activation::SiLU, p.prefix(), ": only the SiLU activation is supported");
  if (p.has("conv_shortcut.weight")) conv_shortcut = Conv2d(p.sub("conv_shortcut"), Conv2dGeometry::same(0));
  if (p.has("time_emb_proj.weight")) time_emb_proj = Linear(p.sub("time_emb_proj"));
}

// x [B, H, W, Cin], temb [B, T] -> [B, H, W, Cout]
Tensor ResnetBlock2D::forward(Ctx& ctx, const Tensor& x, const Tensor& temb) const {
  Tensor h = conv1.forward(ctx, norm1.forward(ctx, x, opt.act));  // [B, H, W, Cout]
  if (temb.defined() && time_emb_proj.weight.defined()) {
    Tensor t = ctx.alloc(temb.shape());
    ctx.ops.activation_forward(temb, t, opt.act);
    Tensor tp = time_emb_proj.forward(ctx, t);  // [B, Cout]
    ctx.ops.add_broadcast_forward(h, tp);
  }
  h = conv2.forward(ctx, norm2.forward(ctx, h, opt.act));  // [B, H, W, Cout]
  Tensor shortcut = conv_shortcut.weight.defined() ? conv_shortcut.forward(ctx, x) : x;
  Tensor y = ctx.alloc(h.shape());
  const float inv = 1.f / opt.output_scale_factor;
  ctx.ops.add_forward(shortcut, h, y, inv, inv);
  return y;
}

}  // namespace db
