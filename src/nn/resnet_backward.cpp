// ResnetBlock2D / Downsample2D / Upsample2D / TimestepEmbedding training forward and backward.
#include "dreambooth/nn/resample.h"
#include "dreambooth/nn/resnet_block.h"
#include "dreambooth/nn/timestep_embedding.h"

namespace db {

// x [B, H, W, Cin], temb [B, T] (undefined: none) -> [B, H, W, Cout]
Tensor ResnetBlock2D::forward(Ctx& ctx, const Tensor& x, const Tensor& temb, Saved& s) const {
  Tensor h = conv1.forward(ctx, norm1.forward(ctx, x, opt.act, s.norm1), s.conv1);  // [B, H, W, Cout]
  s.temb = temb.defined() && time_emb_proj.weight.defined() ? temb : Tensor();
  if (s.temb.defined()) {
    Tensor t = ctx.alloc(temb.shape());
    ctx.ops.activation_forward(temb, t, opt.act);
    Tensor tp = time_emb_proj.forward(ctx, t, s.time_emb_proj);  // [B, Cout]
    ctx.ops.add_broadcast_forward(h, tp);
  }
  h = conv2.forward(ctx, norm2.forward(ctx, h, opt.act, s.norm2), s.conv2);  // [B, H, W, Cout]
  s.x = x;
  Tensor shortcut = conv_shortcut.weight.defined() ? conv_shortcut.forward(ctx, x, s.conv_shortcut) : x;
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

Tensor Downsample2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Downsample2D* g) const {
  return conv.backward(ctx, s.conv, dy, g ? &g->conv : nullptr);
}

// x [B, H, W, C] -> [B, 2H, 2W, C]
Tensor Upsample2D::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  Tensor up = ctx.alloc({x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)});
  ctx.ops.upsample_nearest2x_forward(x, up);
  return conv.forward(ctx, up, s.conv);
}

// dy [B, 2H, 2W, C] -> dx [B, H, W, C]
Tensor Upsample2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Upsample2D* g) const {
  Tensor dup = conv.backward(ctx, s.conv, dy, g ? &g->conv : nullptr);  // [B, 2H, 2W, C]
  const Shape& us = s.conv.x.shape();
  Tensor dx = ctx.alloc({us[0], us[1] / 2, us[2] / 2, us[3]});
  ctx.ops.upsample_nearest2x_backward(dup, dx);
  return dx;
}

// t [B] -> [B, D]
Tensor TimestepEmbedding::forward(Ctx& ctx, const Tensor& t, Saved& s) const {
  Tensor e = ctx.alloc({t.numel(), proj_dim});  // [B, proj_dim]
  ctx.ops.timestep_embedding_forward(t, e, proj);
  s.h = linear_1.forward(ctx, e, s.linear_1);  // [B, D] pre-activation
  Tensor h = ctx.alloc(s.h.shape());
  ctx.ops.activation_forward(s.h, h, act);
  return linear_2.forward(ctx, h, s.linear_2);
}

// dtemb [B, D] -> parameter gradients only (timesteps are not differentiated)
void TimestepEmbedding::backward(Ctx& ctx, const Saved& s, const Tensor& dy, TimestepEmbedding* g) const {
  if (!g) return;
  Tensor d = linear_2.backward(ctx, s.linear_2, dy, &g->linear_2);
  ctx.ops.activation_backward(s.h, d, d, act);
  linear_1.backward(ctx, s.linear_1, d, &g->linear_1, /*need_dx=*/false);
}

}  // namespace db
