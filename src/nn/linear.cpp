#include "dreambooth/nn/linear.h"

namespace db {

// x [..., K] -> y [..., N]
Tensor Linear::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  if (s) s->x = x;
  Shape shape = x.shape();
  shape.back() = out_features();
  Tensor y = ctx.alloc(shape);
  ctx.ops.linear_forward(x, weight, bias, y);
  return y;
}

// dy [..., N] -> dx [..., K]; grad->weight [N, K], grad->bias [N] +=
Tensor Linear::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx) const {
  Tensor dx = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
  ctx.ops.linear_backward(dy, s.x, weight, need_dx ? &dx : nullptr, grad ? &grad->weight : nullptr,
                          grad && bias.defined() ? &grad->bias : nullptr);
  return dx;
}

}  // namespace db
