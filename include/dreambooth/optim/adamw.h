#pragma once
// AdamW over flat fp32 buffers with torch.optim.AdamW semantics (decoupled weight decay):
//   p <- p * (1 - lr * wd)
//   m <- lerp(m, g, 1 - b1)            v <- b2 * v + (1 - b2) * g^2
//   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// (Loshchilov & Hutter 2019; the operation order follows torch's single-tensor implementation so
// results agree to float rounding.) This is the CPU reference; the CUDA backend has a fused kernel.
#include <cstdint>

namespace db {

// Hyper-parameters are doubles, as in torch (Python floats): 1 - beta2 formed from float(0.999)
// would differ from torch's scalar by 1.3e-5 relative.
struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

// One step over n elements. `step` is the 1-based step count after this update (bias correction).
void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWConfig& c,
                float lr, int64_t step);

}  // namespace db
