#include "dreambooth/nn/group_norm.h"

namespace db {

// x [B, H, W, C] -> y; s->mean/rstd [B, G]
Tensor GroupNorm::forward(Ctx& ctx, const Tensor& x, Activation act, Saved* s) const {
  Tensor y = ctx.alloc(x.shape());
  if (!s) {
    ctx.ops.group_norm_forward(x, weight, bias, y, groups, eps, act, nullptr, nullptr);
    return y;
  }
  s->x = x;
  s->act = act;
  s->mean = ctx.alloc_f32({x.dim(0), groups});
  s->rstd = ctx.alloc_f32({x.dim(0), groups});
  ctx.ops.group_norm_forward(x, weight, bias, y, groups, eps, act, &s->mean, &s->rstd);
  return y;
}

// dy [B, H, W, C] -> dx; grad->weight/bias [C] +=
Tensor GroupNorm::backward(Ctx& ctx, const Saved& s, const Tensor& dy, GroupNorm* grad) const {
  Tensor dx = ctx.alloc(s.x.shape());
  ctx.ops.group_norm_backward(dy, s.x, weight, bias, s.mean, s.rstd, groups, s.act, &dx,
                              grad ? &grad->weight : nullptr, grad ? &grad->bias : nullptr);
  return dx;
}

}  // namespace db
