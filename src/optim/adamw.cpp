#include "dreambooth/optim/adamw.h"

#include <cmath>

namespace db {

void adamw_step(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWConfig& c,
                float lr, int64_t step) {
  // torch forms these scalars in Python (double) and rounds them once to float.
  const float decay = float(1.0 - double(lr) * c.weight_decay);
  const float w1 = float(1.0 - c.beta1), w2 = float(1.0 - c.beta2);
  const float beta2 = float(c.beta2), eps = float(c.eps);
  // torch computes the bias corrections in Python floats (double), then uses them as scalars.
  const double bc1 = 1.0 - std::pow(c.beta1, double(step));
  const double bc2 = 1.0 - std::pow(c.beta2, double(step));
  const float step_size = float(double(lr) / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i];
    float p = param[i] * decay;
    // torch.lerp(m, g, w): weight < 0.5 uses m + w * (g - m)
    const float mi = w1 < 0.5f ? m[i] + w1 * (g - m[i]) : g - (g - m[i]) * (1.f - w1);
    const float vi = v[i] * beta2 + w2 * g * g;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p = p - step_size * (mi / denom);
    m[i] = mi;
    v[i] = vi;
    param[i] = p;
  }
}

}  // namespace db
