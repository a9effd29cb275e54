#include "dreambooth/nn/resample.h"

namespace db {

Downsample2D::Downsample2D(const ParamSet& p, int padding)
    : conv(p.sub("conv"), padding == 0 ? Conv2dGeometry{2, 0, 1, 0, 1} : Conv2dGeometry::same(padding, 2)) {}

// x [B, H, W, C] -> [B, 2H, 2W, C]
Tensor Upsample2D::forward(Ctx& ctx, const Tensor& x) const {
  Tensor up = ctx.alloc({x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)});
  ctx.ops.upsample_nearest2x_forward(x, up);
  return conv.forward(ctx, up);
}

}  // namespace db
