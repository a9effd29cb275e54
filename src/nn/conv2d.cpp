#include "dreambooth/nn/conv2d.h"

namespace db {

// x [B, H, W, I] -> y [B, Ho, Wo, O]
Tensor Conv2d::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  if (s) s->x = x;
  const int ho = geom.out_h(int(x.dim(1)), int(weight.dim(1))),
            wo = geom.out_w(int(x.dim(2)), int(weight.dim(2)));
  Tensor y = ctx.alloc({x.dim(0), ho, wo, weight.dim(0)});
  ctx.ops.conv2d_forward(x, weight, bias, y, geom);
  return y;
}

// dy [B, Ho, Wo, O] -> dx [B, H, W, I]; grad->weight [O, kh, kw, I], grad->bias [O] +=
Tensor Conv2d::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Conv2d* grad, bool need_dx) const {
  Tensor dx = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
  ctx.ops.conv2d_backward(dy, s.x, weight, need_dx ? &dx : nullptr, grad ? &grad->weight : nullptr,
                          grad && bias.defined() ? &grad->bias : nullptr, geom);
  return dx;
}

}  // namespace db
