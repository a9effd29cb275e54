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
Tensor ClipEncoderLayer::forward(Ctx& ctx, const Tensor& x) const {
  Tensor h = self_attn.forward(ctx, layer_norm1.forward(ctx, x));
  Tensor x1 = ctx.alloc(x.shape());
  ctx.ops.add_forward(x, h, x1);
  Tensor m = fc1.forward(ctx, layer_norm2.forward(ctx, x1));  // [B, T, I]
  ctx.ops.activation_forward(m, m, act);
  h = fc2.forward(ctx, m);  // [B, T, H]
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(x1, h, y);
  return y;
}

}  // namespace db
