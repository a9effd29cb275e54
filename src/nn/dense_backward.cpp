// Linear / Conv2d training forward (keeps the input) and backward.
#include "dreambooth/nn/conv2d.h"
#include "dreambooth/nn/linear.h"

namespace db {

Tensor Linear::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  s.x = x;
  return forward(ctx, x);
}

// dy [..., N] -> dx [..., K] (undefined when !need_dx); grad->weight [N, K], grad->bias [N] +=
Tensor Linear::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx) const {
  Tensor dx = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
  ctx.ops.linear_backward(dy, s.x, weight, need_dx ? &dx : nullptr, grad ? &grad->weight : nullptr,
                          grad && bias.defined() ? &grad->bias : nullptr);
  return dx;
}

Tensor Conv2d::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  s.x = x;
  return forward(ctx, x);
}

// dy [B, Ho, Wo, O] -> dx [B, H, W, I]; grad->weight [O, kh, kw, I], grad->bias [O] +=
Tensor Conv2d::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Conv2d* grad, bool need_dx) const {
  Tensor dx = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
  ctx.ops.conv2d_backward(dy, s.x, weight, need_dx ? &dx : nullptr, grad ? &grad->weight : nullptr,
                          grad && bias.defined() ? &grad->bias : nullptr, geom);
  return dx;
}

}  // namespace db
