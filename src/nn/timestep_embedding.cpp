#include "dreambooth/nn/timestep_embedding.h"

namespace db {

// t [B] -> [B, time_embed_dim]
Tensor TimestepEmbedding::forward(Ctx& ctx, const Tensor& t) const {
  Tensor e = ctx.alloc({t.numel(), proj_dim});  // [B, proj_dim]
  ctx.ops.timestep_embedding_forward(t, e, proj);
  Tensor h = linear_1.forward(ctx, e);  // [B, D]
  ctx.ops.activation_forward(h, h, act);
  return linear_2.forward(ctx, h);  // [B, D]
}

}  // namespace db
