#pragma once
// Global gradient-norm clipping with torch.nn.utils.clip_grad_norm_ semantics:
//   total = ||g||_2 over every parameter,  coef = min(1, max_norm / (total + 1e-6)),  g <- g * coef
#include <cstdint>

namespace db {

// Sum of squares in double (deterministic: fixed block order, independent of thread count).
double sum_of_squares(const float* g, int64_t n);
// Scales g in place by min(1, max_norm / (total_norm + 1e-6)); returns the coefficient used.
float clip_coefficient(double total_norm, float max_norm);
void scale_in_place(float* g, int64_t n, float coef);

}  // namespace db
