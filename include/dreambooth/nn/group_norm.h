#pragma once
// GroupNorm (torch.nn.GroupNorm) over NHWC, optionally followed by a fused SiLU. groups and eps come
// from the model config (never constants here).
#include "dreambooth/nn/module.h"

namespace db {

struct GroupNorm {
  Tensor weight, bias;  // [C], [C]
  int groups = 32;
  float eps = 1e-5f;
  GroupNorm() = default;
  GroupNorm(const ParamSet& p, int groups_, float eps_)
      : weight(p.get("weight")), bias(p.get("bias")), groups(groups_), eps(eps_) {}

  struct Saved {
    Tensor x, mean, rstd;  // [B, H, W, C], f32 [B, G], f32 [B, G]
    Activation act = Activation::None;
  };
  // x [B, H, W, C] (or [B, N, C]) -> y, same shape
  Tensor forward(Ctx& ctx, const Tensor& x, Activation act = Activation::None, Saved* s = nullptr) const;
  // dy [B, H, W, C] -> dx; grad->weight/bias [C] +=
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, GroupNorm* grad) const;
};

}  // namespace db
