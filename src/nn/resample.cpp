#include "dreambooth/nn/resample.h"

namespace db {

Downsample2D::Downsample2D(const ParamSet& p, int padding)
    : conv(p.sub("conv"), padding == 0 ? Conv2dGeometry{2, 0, 1, 0, 1} : Conv2dGeometry::same(padding, 2)) {}

// dy [B, H/2, W/2, C] -> dx [B, H, W, C]
Tensor Downsample2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Downsample2D* g) const {
  return conv.backward(ctx, s.conv, dy, g ? &g->conv : nullptr);
}

// x [B, H, W, C] -> [B, 2H, 2W, C]
Tensor Upsample2D::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  Tensor up = ctx.alloc({x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)});
  ctx.ops.upsample_nearest2x_forward(x, up);
  return conv.forward(ctx, up, s ? &s->conv : nullptr);
}

// dy [B, 2H, 2W, C] -> dx [B, H, W, C]
Tensor Upsample2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Upsample2D* g) const {
  Tensor dup = conv.backward(ctx, s.conv, dy, g ? &g->conv : nullptr);  // [B, 2H, 2W, C]
  const Shape& us = s.conv.x.shape();
  Tensor dx = ctx.alloc({us[0], us[1] / 2, us[2] / 2, us[3]});
  ctx.ops.upsample_nearest2x_backward(dup, dx);
  return dx;
}

}  // namespace db
