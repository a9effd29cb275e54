#include "dreambooth/nn/transformer_block.h"

namespace db {

BasicTransformerBlock::BasicTransformerBlock(const ParamSet& p, int heads, float norm_eps, bool upcast,
                                             bool only_cross)
    : norm1(p.sub("norm1"), norm_eps),
      norm2(p.sub("norm2"), norm_eps),
      norm3(p.sub("norm3"), norm_eps),
      attn1(p.sub("attn1"), heads, false, upcast),
      attn2(p.sub("attn2"), heads, false, upcast),
      ff(p.sub("ff")),
      only_cross_attention(only_cross) {}

// x [B, T, C], context [B, Tc, Cc] -> [B, T, C]
Tensor BasicTransformerBlock::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved* s) const {
  Tensor h = attn1.forward(ctx, norm1.forward(ctx, x, s ? &s->norm1 : nullptr),
                           only_cross_attention ? context : Tensor(), s ? &s->attn1 : nullptr);
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  h = attn2.forward(ctx, norm2.forward(ctx, x1, s ? &s->norm2 : nullptr), context, s ? &s->attn2 : nullptr);
  Tensor x2 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x1, h, x2);
  h = ff.forward(ctx, norm3.forward(ctx, x2, s ? &s->norm3 : nullptr), s ? &s->ff : nullptr);
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(x2, h, y);
  return y;
}

// dy [B, T, C] -> dx [B, T, C]; *dcontext [B, Tc, Cc] += (null: skipped)
Tensor BasicTransformerBlock::backward(Ctx& ctx, const Saved& s, const Tensor& dy, BasicTransformerBlock* g,
                                       Tensor* dcontext) const {
  // y = x2 + ff(norm3(x2)): dx2 = dy + norm3'(ff'(dy))
  Tensor d = ff.backward(ctx, s.ff, dy, g ? &g->ff : nullptr);
  d = norm3.backward(ctx, s.norm3, d, g ? &g->norm3 : nullptr);
  Tensor dx2 = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dy, d, dx2);
  // x2 = x1 + attn2(norm2(x1), context)
  d = attn2.backward(ctx, s.attn2, dx2, g ? &g->attn2 : nullptr, dcontext);
  d = norm2.backward(ctx, s.norm2, d, g ? &g->norm2 : nullptr);
  Tensor dx1 = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dx2, d, dx1);
  // x1 = x + attn1(norm1(x)[, context])
  d = attn1.backward(ctx, s.attn1, dx1, g ? &g->attn1 : nullptr, dcontext);
  d = norm1.backward(ctx, s.norm1, d, g ? &g->norm1 : nullptr);
  Tensor dx = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dx1, d, dx);
  return dx;
}

}  // namespace db
