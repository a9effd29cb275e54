#include "dreambooth/nn/conv2d.h"

namespace db {

// x [B, H, W, I] -> y [B, Ho, Wo, O]
Tensor Conv2d::forward(Ctx& ctx, const Tensor& x) const {
  const int ho = geom.out_h(int(x.dim(1)), int(weight.dim(1))),
            wo = geom.out_w(int(x.dim(2)), int(weight.dim(2)));
  Tensor y = ctx.alloc({x.dim(0), ho, wo, weight.dim(0)});
  ctx.ops.conv2d_forward(x, weight, bias, y, geom);
  return y;
}

}  // namespace db
