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

// x [B, H, W, Cin], temb [B, T] (undefined: none) -> [B, H, W, Cout]
Tensor ResnetBlock2D::forward(Ctx& ctx, const Tensor& x, const Tensor& temb, Saved* s) const {
  Tensor h = conv1.forward(ctx, norm1.forward(ctx, x, opt.act, s ? &s->norm1 : nullptr),
                           s ? &s->conv1 : nullptr);  // [B, H, W, Cout]
  const bool with_temb = temb.defined() && time_emb_proj.weight.defined();
  if (s) s->temb = with_temb ? temb : Tensor();
  if (with_temb) {
    Tensor t = ctx.alloc(temb.shape());
    ctx.ops.activation_forward(temb, t, opt.act);
    Tensor tp = time_emb_proj.forward(ctx, t, s ? &s->time_emb_proj : nullptr);  // [B, Cout]
    ctx.ops.add_broadcast_forward(h, tp);
  }
  h = conv2.forward(ctx, norm2.forward(ctx, h, opt.act, s ? &s->norm2 : nullptr),
                    s ? &s->conv2 : nullptr);  // [B, H, W, Cout]
  Tensor shortcut =
      conv_shortcut.weight.defined() ? conv_shortcut.forward(ctx, x, s ? &s->conv_shortcut : nullptr) : x;
  Tensor y = ctx.alloc(h.shape());
  const float inv = 1.f / opt.output_scale_factor;
  ctx.ops.add_forward(shortcut, h, y, inv, inv);
  return y;
}

// dy [B, H, W, Cout] -> dx [B, H, W, Cin]; *dtemb [B, T] += (the time embedding feeds every resnet)
Tensor ResnetBlock2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, ResnetBlock2D* g,
                               Tensor* dtemb) const {
  Tensor dys = dy;  // d(shortcut + h) = dy / output_scale_factor
  if (opt.output_scale_factor != 1.f) {
    dys = ctx.alloc(dy.shape());
    ctx.ops.scale_forward(dy, dys, 1.f / opt.output_scale_factor);
  }
  Tensor d = conv2.backward(ctx, s.conv2, dys, g ? &g->conv2 : nullptr);
  d = norm2.backward(ctx, s.norm2, d, g ? &g->norm2 : nullptr);  // d(h after the temb add)
  if (s.temb.defined() && (g || dtemb)) {
    Tensor dtp = ctx.alloc({d.dim(0), d.dim(-1)});  // [B, Cout]
    ctx.ops.add_broadcast_backward(d, dtp);
    Tensor dt = time_emb_proj.backward(ctx, s.time_emb_proj, dtp, g ? &g->time_emb_proj : nullptr,
                                       dtemb != nullptr);  // [B, T]
    if (dtemb) {
      ctx.ops.activation_backward(s.temb, dt, dt, opt.act);
      ctx.ops.add_forward(*dtemb, dt, *dtemb);
    }
  }
  d = conv1.backward(ctx, s.conv1, d, g ? &g->conv1 : nullptr);
  d = norm1.backward(ctx, s.norm1, d, g ? &g->norm1 : nullptr);  // [B, H, W, Cin]
  if (conv_shortcut.weight.defined()) {
    Tensor dsc = conv_shortcut.backward(ctx, s.conv_shortcut, dys, g ? &g->conv_shortcut : nullptr);
    ctx.ops.add_forward(d, dsc, d);
  } else {
    ctx.ops.add_forward(d, dys, d);
  }
  return d;
}

}  // namespace db
