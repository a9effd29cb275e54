#include "dreambooth/nn/clip_encoder_layer.h"

namespace db {

ClipEncoderLayer::ClipEncoderLayer(const ParamSet& p, int heads, float eps, Activation a)
    : layer_norm1(p.sub("layer_norm1"), eps),
      layer_norm2(p.sub("layer_norm2"), eps),
      self_attn(p.sub("self_attn"), heads, /*causal=*/true, false, AttentionNames::clip()),
      fc1(p.sub("mlp.fc1")),
      fc2(p.sub("mlp.fc2")),
      act(a) {}

// x [B, T, H] -> [B, T, H]
Tensor ClipEncoderLayer::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  Tensor h = self_attn.forward(ctx, layer_norm1.forward(ctx, x, s ? &s->layer_norm1 : nullptr), Tensor(),
                               s ? &s->self_attn : nullptr);
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  // [B, T, I] pre-activation (kept for backward)
  Tensor pre =
      fc1.forward(ctx, layer_norm2.forward(ctx, x1, s ? &s->layer_norm2 : nullptr), s ? &s->fc1 : nullptr);
  if (s) s->m = pre;
  Tensor m = ctx.alloc(pre.shape());
  ctx.ops.activation_forward(pre, m, act);
  h = fc2.forward(ctx, m, s ? &s->fc2 : nullptr);  // [B, T, H]
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
