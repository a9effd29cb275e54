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
  // x [B, H, W, I] -> y [B, Ho, Wo, O]
  Tensor forward(Ctx& ctx, const Tensor& x) const;
};

}  // namespace db
