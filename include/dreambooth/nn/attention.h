#pragma once
// Attention (diffusers models/attention_processor.py Attention with AttnProcessor2_0, and CLIP's
// CLIPAttention): q/k/v projections, multi-head scaled dot-product attention, output projection.
// Self-attention when context is undefined, cross-attention over context otherwise.
#include <string>

#include "dreambooth/nn/linear.h"

namespace db {

struct AttentionNames {
  std::string q = "to_q", k = "to_k", v = "to_v", out = "to_out.0";  // diffusers
  static AttentionNames clip() { return {"q_proj", "k_proj", "v_proj", "out_proj"}; }
};

struct Attention {
  Linear to_q, to_k, to_v, to_out;
  AttentionParams params;  // heads, causal, upcast; scale 1/sqrt(head_dim)
  Attention() = default;
  Attention(const ParamSet& p, int heads, bool causal = false, bool upcast = false,
            const AttentionNames& n = AttentionNames());

  struct Saved {
    Linear::Saved to_q, to_k, to_v, to_out;
    Tensor q, k, v, o, lse;  // [B, Tq, H*D], [B, Tk, H*D] x2, [B, Tq, H*D], f32 [B, H, Tq]
    bool cross = false;
  };
  // x [B, Tq, C], context [B, Tk, Cc] (undefined: self) -> y [B, Tq, C]
  Tensor forward(Ctx& ctx, const Tensor& x, const Tensor& context = Tensor(), Saved* s = nullptr) const;
  // dy [B, Tq, C] -> dx [B, Tq, C]. Cross-attention adds the context's gradient into *dcontext
  // [B, Tk, Cc] (one context feeds every cross-attention of a UNet); null skips it.
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Attention* grad, Tensor* dcontext) const;
};

}  // namespace db
