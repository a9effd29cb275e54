#include "dreambooth/nn/feed_forward.h"

namespace db {

// x [B, T, dim] -> [B, T, dim]
Tensor FeedForward::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  Tensor h2 = proj.forward(ctx, x, s ? &s->proj : nullptr);  // [B, T, 2*inner]
  if (s) s->h2 = h2;
  Shape sh = h2.shape();
  sh.back() /= 2;
  Tensor h = ctx.alloc(sh);  // [B, T, inner] = hidden * gelu(gate)
  ctx.ops.geglu_forward(h2, h);
  return out.forward(ctx, h, s ? &s->out : nullptr);
}

// dy [B, T, dim] -> dx [B, T, dim]
Tensor FeedForward::backward(Ctx& ctx, const Saved& s, const Tensor& dy, FeedForward* grad) const {
  Tensor dh = out.backward(ctx, s.out, dy, grad ? &grad->out : nullptr);  // [B, T, inner]
  Tensor dh2 = ctx.alloc(s.h2.shape());                                   // [B, T, 2*inner]
  ctx.ops.geglu_backward(s.h2, dh, dh2);
  return proj.backward(ctx, s.proj, dh2, grad ? &grad->proj : nullptr);
}

}  // namespace db
