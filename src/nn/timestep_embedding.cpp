#include "dreambooth/nn/timestep_embedding.h"

namespace db {

// t [B] -> [B, time_embed_dim]
Tensor TimestepEmbedding::forward(Ctx& ctx, const Tensor& t, Saved* s) const {
  Tensor e = ctx.alloc({t.numel(), proj_dim});  // [B, proj_dim]
  ctx.ops.timestep_embedding_forward(t, e, proj);
  Tensor pre = linear_1.forward(ctx, e, s ? &s->linear_1 : nullptr);  // [B, D] pre-activation
  if (s) s->h = pre;
  Tensor h = ctx.alloc(pre.shape());
  ctx.ops.activation_forward(pre, h, act);
  return linear_2.forward(ctx, h, s ? &s->linear_2 : nullptr);
}

// dtemb [B, D] -> parameter gradients only (timesteps are not differentiated)
void TimestepEmbedding::backward(Ctx& ctx, const Saved& s, const Tensor& dy, TimestepEmbedding* g) const {
  if (!g) return;
  Tensor d = linear_2.backward(ctx, s.linear_2, dy, &g->linear_2);
  ctx.ops.activation_backward(s.h, d, d, act);
  linear_1.backward(ctx, s.linear_1, d, &g->linear_1, /*need_dx=*/false);
}

}  // namespace db
