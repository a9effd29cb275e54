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
Tensor BasicTransformerBlock::forward(Ctx& ctx, const Tensor& x, const Tensor& context) const {
  Tensor h = attn1.forward(ctx, norm1.forward(ctx, x), only_cross_attention ? context : Tensor());
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  h = attn2.forward(ctx, norm2.forward(ctx, x1), context);
  Tensor x2 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x1, h, x2);
  h = ff.forward(ctx, norm3.forward(ctx, x2));
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(x2, h, y);
  return y;
}

}  // namespace db
