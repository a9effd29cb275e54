#include "dreambooth/nn/linear.h"

namespace db {

// x [..., K] -> y [..., N]
Tensor Linear::forward(Ctx& ctx, const Tensor& x) const {
  Shape s = x.shape();
  s.back() = out_features();
  Tensor y = ctx.alloc(s);
  ctx.ops.linear_forward(x, weight, bias, y);
  return y;
}

}  // namespace db
