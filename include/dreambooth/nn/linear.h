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
  // x [..., K] -> y [..., N]
  Tensor forward(Ctx& ctx, const Tensor& x) const;

  // Training (module.h): forward that keeps what backward needs; backward returns dx (undefined when
  // !need_dx) and adds parameter gradients into `grad` (this layer bound to the gradient buffer; null:
  // frozen).
  struct Saved {
    Tensor x;  // [..., K]
  };
  Tensor forward(Ctx& ctx, const Tensor& x, Saved& s) const;
  // dy [..., N] -> dx [..., K]
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx = true) const;
};

}  // namespace db
