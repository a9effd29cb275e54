#pragma once
// AdamW hyper-parameters (torch.optim.AdamW semantics, decoupled weight decay):
//   p <- p * (1 - lr * wd)
//   m <- lerp(m, g, 1 - b1)            v <- b2 * v + (1 - b2) * g^2
//   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// (Loshchilov & Hutter 2019.) The update itself is Ops::adamw_step, fused over a flat buffer on every
// backend, in torch's single-tensor operation order so results agree to float rounding.
namespace db {

// Hyper-parameters are doubles, as in torch (Python floats): 1 - beta2 formed from float(0.999)
// would differ from torch's scalar by 1.3e-5 relative.
struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

}  // namespace db
