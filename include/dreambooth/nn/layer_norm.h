#pragma once
// LayerNorm (torch.nn.LayerNorm) over the last dim, elementwise affine; eps from the caller.
#include "dreambooth/nn/module.h"

namespace db {

struct LayerNorm {
  Tensor weight, bias;  // [C], [C]
  float eps = 1e-5f;
  LayerNorm() = default;
  LayerNorm(const ParamSet& p, float eps_) : weight(p.get("weight")), bias(p.get("bias")), eps(eps_) {}

  struct Saved {
    Tensor x, mean, rstd;  // [..., C], f32 [M], f32 [M]
  };
  // x [..., C] -> y [..., C]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  // dy [..., C] -> dx; grad->weight/bias [C] +=
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, LayerNorm* grad) const;
};

}  // namespace db
