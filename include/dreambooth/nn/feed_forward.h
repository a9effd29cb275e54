#pragma once
// FeedForward (diffusers attention.py, activation_fn "geglu"): ff.net.0.proj (GEGLU: Linear to 2*inner,
// hidden * gelu(gate)), ff.net.2 (Linear back to dim). Dropout (net.1) is identity.
#include "dreambooth/nn/linear.h"

namespace db {

struct FeedForward {
  Linear proj, out;  // net.0.proj [2*inner, dim], net.2 [dim, inner]
  FeedForward() = default;
  explicit FeedForward(const ParamSet& p) : proj(p.sub("net.0.proj")), out(p.sub("net.2")) {}

  struct Saved {
    Linear::Saved proj, out;
    Tensor h2;  // [B, T, 2*inner]: GEGLU input
  };
  // x [B, T, dim] -> [B, T, dim]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, FeedForward* grad) const;
};

}  // namespace db
