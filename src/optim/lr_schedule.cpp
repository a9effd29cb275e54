#include "dreambooth/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "dreambooth/core/error.h"

namespace db {

LrSchedule make_lr_schedule(const std::string& name, float base_lr, int64_t warmup_steps,
                            int64_t total_steps) {
  DB_CHECK(name == "constant" || name == "constant_with_warmup" || name == "linear" || name == "cosine",
           "--lr-scheduler: unknown schedule '", name,
           "' (expected constant, constant_with_warmup, linear, cosine)");
  DB_CHECK(warmup_steps >= 0, "--lr-warmup-steps must be >= 0, got ", warmup_steps);
  DB_CHECK(base_lr > 0 && std::isfinite(base_lr), "--lr must be a positive number, got ", base_lr);
  return LrSchedule{name, base_lr, warmup_steps, total_steps};
}

float LrSchedule::lr_at(int64_t k) const {
  const double w = double(warmup_steps), t = double(total_steps), s = double(k);
  double f = 1.0;
  if (name != "constant" && k < warmup_steps) {
    f = s / std::max(1.0, w);
  } else if (name == "linear") {
    f = std::max(0.0, (t - s) / std::max(1.0, t - w));
  } else if (name == "cosine") {
    const double progress = (s - w) / std::max(1.0, t - w);
    f = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 2.0 * 0.5 * progress)));
  }
  return float(double(base_lr) * f);
}

}  // namespace db
