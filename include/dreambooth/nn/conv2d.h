#pragma once
// Conv2d (torch.nn.Conv2d) on NHWC: weight [O, kh, kw, I] (converted at load), bias [O].
#include "dreambooth/nn/module.h"

namespace db {

struct Conv2d {
  Tensor weight, bias;  // [O, kh, kw, I], [O]
  Conv2dGeometry geom;
  Conv2d() = default;
  Conv2d(const ParamSet& p, const Conv2dGeometry& g)
      : weight(p.get("weight")), bias(p.get_optional("bias")), geom(g) {}

  struct Saved {
    Tensor x;  // [B, H, W, I]
  };
  // x [B, H, W, I] -> y [B, Ho, Wo, O]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  // dy [B, Ho, Wo, O] -> dx [B, H, W, I] (undefined when !need_dx); grad->weight/bias +=
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Conv2d* grad, bool need_dx = true) const;
};

}  // namespace db
