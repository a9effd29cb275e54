#include "dreambooth/core/philox.h"

#include <cmath>

namespace db {

float PhiloxStream::normal(uint64_t e) const {
  uint64_t pair = e / 2;
  double u1 = uniform(2 * pair), u2 = uniform(2 * pair + 1);
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * M_PI * u2;
  return float((e % 2 == 0) ? r * std::cos(theta) : r * std::sin(theta));
}

void PhiloxStream::normals(float* out, uint64_t n, uint64_t first) const {
  for (uint64_t i = 0; i < n; ++i) out[i] = normal(first + i);
}

uint32_t PhiloxStream::below(uint64_t e, uint32_t n) const {
  return uint32_t((uint64_t(u32(e)) * n) >> 32);
}

}  // namespace db
