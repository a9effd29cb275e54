// BasicTransformerBlock / Transformer2D / ClipEncoderLayer training forward and backward.
#include "dreambooth/nn/clip_encoder_layer.h"
#include "dreambooth/nn/transformer_2d.h"
#include "dreambooth/nn/transformer_block.h"

namespace db {

// x [B, T, C], context [B, Tc, Cc] -> [B, T, C]; the same sequence as forward(ctx, x, context)
Tensor BasicTransformerBlock::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved& s) const {
  Tensor h =
      attn1.forward(ctx, norm1.forward(ctx, x, s.norm1), only_cross_attention ? context : Tensor(), s.attn1);
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  h = attn2.forward(ctx, norm2.forward(ctx, x1, s.norm2), context, s.attn2);
  Tensor x2 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x1, h, x2);
  h = ff.forward(ctx, norm3.forward(ctx, x2, s.norm3), s.ff);
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

// x [B, H, W, C], context [B, Tc, Cc] -> [B, H, W, C]
Tensor Transformer2D::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved& s) const {
  const int64_t B = x.dim(0);
  s.blocks.resize(blocks.size());
  Tensor h = norm.forward(ctx, x, Activation::None, s.norm);
  h = proj_in.forward(ctx, h, s.proj_in).view({B, -1, proj_in.out_features()});  // [B, H*W, D]
  for (size_t i = 0; i < blocks.size(); ++i) h = blocks[i].forward(ctx, h, context, s.blocks[i]);
  h = proj_out.forward(ctx, h, s.proj_out);  // [B, H*W, C]
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(h.view(x.shape()), x, y);
  return y;
}

// dy [B, H, W, C] -> dx [B, H, W, C]; *dcontext +=
Tensor Transformer2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Transformer2D* g,
                               Tensor* dcontext) const {
  const int64_t B = dy.dim(0);
  Tensor d = proj_out.backward(ctx, s.proj_out, dy.view({B, -1, dy.dim(-1)}), g ? &g->proj_out : nullptr);
  for (size_t i = blocks.size(); i-- > 0;)
    d = blocks[i].backward(ctx, s.blocks[i], d, g ? &g->blocks[i] : nullptr, dcontext);
  d = proj_in.backward(ctx, s.proj_in, d.view(s.proj_in.x.shape()), g ? &g->proj_in : nullptr);
  d = norm.backward(ctx, s.norm, d, g ? &g->norm : nullptr);  // [B, H, W, C]
  Tensor dx = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dy, d, dx);
  return dx;
}

// x [B, T, H] -> [B, T, H]
Tensor ClipEncoderLayer::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  Tensor h = self_attn.forward(ctx, layer_norm1.forward(ctx, x, s.layer_norm1), Tensor(), s.self_attn);
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  s.m = fc1.forward(ctx, layer_norm2.forward(ctx, x1, s.layer_norm2), s.fc1);  // [B, T, I] pre-activation
  Tensor m = ctx.alloc(s.m.shape());
  ctx.ops.activation_forward(s.m, m, act);
  h = fc2.forward(ctx, m, s.fc2);  // [B, T, H]
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(x1, h, y);
  return y;
}

// dy [B, T, H] -> dx [B, T, H]
Tensor ClipEncoderLayer::backward(Ctx& ctx, const Saved& s, const Tensor& dy, ClipEncoderLayer* g) const {
  Tensor d = fc2.backward(ctx, s.fc2, dy, g ? &g->fc2 : nullptr);  // [B, T, I]
  ctx.ops.activation_backward(s.m, d, d, act);
  d = fc1.backward(ctx, s.fc1, d, g ? &g->fc1 : nullptr);
  d = layer_norm2.backward(ctx, s.layer_norm2, d, g ? &g->layer_norm2 : nullptr);
  Tensor dx1 = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dy, d, dx1);
  d = self_attn.backward(ctx, s.self_attn, dx1, g ? &g->self_attn : nullptr, nullptr);
  d = layer_norm1.backward(ctx, s.layer_norm1, d, g ? &g->layer_norm1 : nullptr);
  Tensor dx = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dx1, d, dx);
  return dx;
}

}  // namespace db
