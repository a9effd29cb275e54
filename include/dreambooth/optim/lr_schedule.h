#pragma once
// Learning-rate schedules with diffusers' get_scheduler semantics (a LambdaLR stepped after every
// optimizer step, so optimizer step k (0-based) uses factor(k)):
//   constant               1
//   constant_with_warmup   k < W ? k / max(1, W) : 1
//   linear                 k < W ? k / max(1, W) : max(0, (T - k) / max(1, T - W))
//   cosine                 k < W ? k / max(1, W) : max(0, 0.5 (1 + cos(pi * 2 * 0.5 * (k - W) / max(1, T -
//   W))))
#include <cstdint>
#include <string>

namespace db {

struct LrSchedule {
  std::string name = "constant";  // constant | constant_with_warmup | linear | cosine
  float base_lr = 5e-6f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;
  float lr_at(int64_t step) const;  // step: 0-based optimizer step
};

// Validates the name (error lists the valid ones).
LrSchedule make_lr_schedule(const std::string& name, float base_lr, int64_t warmup_steps,
                            int64_t total_steps);

}  // namespace db
