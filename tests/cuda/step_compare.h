#pragma once
// What the CUDA-vs-CPU training-step tests share: the relative error and one printed line per step.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "dreambooth/pipelines/train_step.h"

namespace db::test {

inline double rel(double a, double ref) {
  return std::abs(a - ref) / std::max(std::abs(ref), 1e-30);
}

// "  step S  loss L (cpu L', rel e)  grad_norm N (cpu N', rel e)" for step `s`: got `g`, CPU `r`.
inline void print_step_vs_cpu(int s, const StepResult& g, const StepResult& r) {
  std::printf("  step %d  loss %.7f (cpu %.7f, rel %.1e)  grad_norm %.6f (cpu %.6f, rel %.1e)\n", s,
              g.loss.loss, r.loss.loss, rel(g.loss.loss, r.loss.loss), g.update.grad_norm, r.update.grad_norm,
              rel(g.update.grad_norm, r.update.grad_norm));
}

}  // namespace db::test
