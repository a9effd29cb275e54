#pragma once
// BasicTransformerBlock (diffusers attention.py, norm_type "layer_norm"):
//   x = x + attn1(norm1(x))            self-attention (or cross when only_cross_attention)
//   x = x + attn2(norm2(x), context)   cross-attention over encoder_hidden_states
//   x = x + ff(norm3(x))               GEGLU feed-forward
#include "dreambooth/nn/attention.h"
#include "dreambooth/nn/feed_forward.h"
#include "dreambooth/nn/layer_norm.h"

namespace db {

struct BasicTransformerBlock {
  LayerNorm norm1, norm2, norm3;
  Attention attn1, attn2;
  FeedForward ff;
  bool only_cross_attention = false;
  BasicTransformerBlock() = default;
  BasicTransformerBlock(const ParamSet& p, int heads, float norm_eps, bool upcast, bool only_cross);

  struct Saved {
    LayerNorm::Saved norm1, norm2, norm3;
    Attention::Saved attn1, attn2;
    FeedForward::Saved ff;
  };
  // x [B, T, C], context [B, Tc, Cc] -> [B, T, C]
  Tensor forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved* s = nullptr) const;
  // dy [B, T, C] -> dx [B, T, C]; *dcontext [B, Tc, Cc] += (null: skipped)
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, BasicTransformerBlock* grad,
                  Tensor* dcontext) const;
};

}  // namespace db
