#include "dreambooth/nn/group_norm.h"

namespace db {

Tensor GroupNorm::forward(Ctx& ctx, const Tensor& x, Activation act) const {
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.group_norm_forward(x, weight, bias, y, groups, eps, act, nullptr, nullptr);
  return y;
}

}  // namespace db
