#pragma once
// Linear (torch.nn.Linear): weight [N, K], optional bias [N]. Also binds a 1x1 conv ([N, 1, 1, K]),
// which is the same op on NHWC / [B, T, C] data (Transformer2D proj_in/proj_out, VAE quant_conv).
#include "dreambooth/nn/module.h"

namespace db {

struct Linear {
  Tensor weight, bias;  // [N, K] (or [N, 1, 1, K]), [N] or undefined
  Linear() = default;
  explicit Linear(const ParamSet& p) : weight(p.get("weight")), bias(p.get_optional("bias")) {}
  int64_t out_features() const { return weight.dim(0); }

  struct Saved {
    Tensor x;  // [..., K]
  };
  // x [..., K] -> y [..., N]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  // dy [..., N] -> dx [..., K] (undefined when !need_dx); grad->weight [N, K], grad->bias [N] += (null
  // grad: frozen)
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx = true) const;
};

}  // namespace db
