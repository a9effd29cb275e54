#include "dreambooth/optim/grad_clip.h"

#include <algorithm>
#include <vector>

namespace db {

double sum_of_squares(const float* g, int64_t n) {
  // Fixed 64 Ki-element blocks summed in order: the result does not depend on the thread count.
  const int64_t kBlock = 1 << 16;
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(nb, 1)), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    double s = 0;
    for (int64_t i = b * kBlock, e = std::min(n, (b + 1) * kBlock); i < e; ++i) s += double(g[i]) * g[i];
    partial[size_t(b)] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

float clip_coefficient(double total_norm, float max_norm) {
  return float(std::min(1.0, double(max_norm) / (total_norm + 1e-6)));
}

void scale_in_place(float* g, int64_t n, float coef) {
  if (coef == 1.f) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] *= coef;
}

}  // namespace db
