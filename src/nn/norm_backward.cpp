// GroupNorm / LayerNorm training forward (input and statistics kept) and backward.
#include "dreambooth/nn/group_norm.h"
#include "dreambooth/nn/layer_norm.h"

namespace db {

// x [B, H, W, C] -> y; s.mean/rstd [B, G]
Tensor GroupNorm::forward(Ctx& ctx, const Tensor& x, Activation act, Saved& s) const {
  s.x = x;
  s.act = act;
  s.mean = ctx.alloc({x.dim(0), groups});
  s.rstd = ctx.alloc({x.dim(0), groups});
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.group_norm_forward(x, weight, bias, y, groups, eps, act, &s.mean, &s.rstd);
  return y;
}

// dy [B, H, W, C] -> dx; grad->weight/bias [C] +=
Tensor GroupNorm::backward(Ctx& ctx, const Saved& s, const Tensor& dy, GroupNorm* grad) const {
  Tensor dx = ctx.alloc(s.x.shape());
  ctx.ops.group_norm_backward(dy, s.x, weight, bias, s.mean, s.rstd, groups, s.act, &dx,
                              grad ? &grad->weight : nullptr, grad ? &grad->bias : nullptr);
  return dx;
}

// x [..., C] -> y; s.mean/rstd [M] (M = numel / C)
Tensor LayerNorm::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  const int64_t M = x.numel() / x.dim(-1);
  s.x = x;
  s.mean = ctx.alloc({M});
  s.rstd = ctx.alloc({M});
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.layer_norm_forward(x, weight, bias, y, eps, &s.mean, &s.rstd);
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
