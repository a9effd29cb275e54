#pragma once
// CLIPEncoderLayer (transformers models/clip/modeling_clip.py), pre-norm:
//   x = x + self_attn(layer_norm1(x))   causal mask (CLIPTextTransformer always builds one)
//   x = x + mlp(layer_norm2(x))         fc1 -> hidden_act (quick_gelu | gelu) -> fc2
#include "dreambooth/nn/attention.h"
#include "dreambooth/nn/layer_norm.h"

namespace db {

struct ClipEncoderLayer {
  LayerNorm layer_norm1, layer_norm2;
  Attention self_attn;  // q_proj, k_proj, v_proj, out_proj (all with bias)
  Linear fc1, fc2;      // mlp.fc1 [I, H], mlp.fc2 [H, I]
  Activation act = Activation::QuickGELU;
  ClipEncoderLayer() = default;
  ClipEncoderLayer(const ParamSet& p, int heads, float eps, Activation a);

  struct Saved {
    LayerNorm::Saved layer_norm1, layer_norm2;
    Attention::Saved self_attn;
    Linear::Saved fc1, fc2;
    Tensor m;  // [B, T, I]: fc1's output, before the activation
  };
  // x [B, T, H] -> [B, T, H]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, ClipEncoderLayer* grad) const;
};

}  // namespace db
