#include "dreambooth/nn/layer_norm.h"

namespace db {

// x [..., C] -> y; s->mean/rstd [M] (M = numel / C)
Tensor LayerNorm::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  Tensor y = ctx.alloc(x.shape());
  if (!s) {
    ctx.ops.layer_norm_forward(x, weight, bias, y, eps, nullptr, nullptr);
    return y;
  }
  const int64_t M = x.numel() / x.dim(-1);
  s->x = x;
  s->mean = ctx.alloc_f32({M});
  s->rstd = ctx.alloc_f32({M});
  ctx.ops.layer_norm_forward(x, weight, bias, y, eps, &s->mean, &s->rstd);
  return y;
}

// dy [..., C] -> dx; grad->weight/bias [C] +=
Tensor LayerNorm::backward(Ctx& ctx, const Saved& s, const Tensor& dy, LayerNorm* grad) const {
  Tensor dx = ctx.alloc(s.x.shape());
  ctx.ops.layer_norm_backward(dy, s.x, weight, s.mean, s.rstd, &dx, grad ? &grad->weight : nullptr,
                              grad ? &grad->bias : nullptr);
  return dx;
}

}  // namespace db
