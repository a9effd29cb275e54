#include "dreambooth/nn/feed_forward.h"

namespace db {

// x [B, T, dim] -> [B, T, dim]
Tensor FeedForward::forward(Ctx& ctx, const Tensor& x) const {
  Tensor h2 = proj.forward(ctx, x);  // [B, T, 2*inner]
  Shape s = h2.shape();
  s.back() /= 2;
  Tensor h = ctx.alloc(s);  // [B, T, inner] = hidden * gelu(gate)
  ctx.ops.geglu_forward(h2, h);
  return out.forward(ctx, h);
}

}  // namespace db
