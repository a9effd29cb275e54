#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/optim/lr_schedule.h"
#include "test_helpers.h"

using namespace db;

namespace {

nlohmann::json load_optim_golden() {
  return db::test::golden_json("optim/optim.json");
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  return db::test::diff(a, b).rel_l2;
}

}  // namespace

// torch.optim.AdamW (foreach=False) + clip_grad_norm_ for 3-5 steps, through the backend ops the trainer
// uses (sum_of_squares, clip_and_check, adamw_step). Elementwise fp32 math in the same operation order
// as torch: what remains is the reduction order of the grad norm (double here, float in torch) feeding
// the clip coefficient, ~1e-7 relative. Bound 1e-6 on params and moments.
TEST(Optim, AdamWWithClippingMatchesTorch) {
  auto golden = load_optim_golden();
  CpuOps ops;
  for (const auto& c : golden["adamw"]) {
    const int64_t n = c["n"];
    Tensor p = Tensor::from_vector(c["param0"].get<std::vector<float>>(), {n}), m = Tensor::zeros({n}),
           v = Tensor::zeros({n}), sumsq = Tensor::zeros({1}, DType::F64), coef = Tensor::zeros({2}),
           check = Tensor::zeros({1});
    AdamWStep a;
    a.weight_decay = c["weight_decay"];
    a.lr = float(c["lr"]);
    const float max_norm = c["max_norm"];
    for (size_t s = 0; s < c["grads"].size(); ++s) {
      const Tensor g = Tensor::from_vector(c["grads"][s].get<std::vector<float>>(), {n});
      ops.sum_of_squares(g, sumsq);
      const double norm = std::sqrt(sumsq.data<double>()[0]);
      EXPECT_NEAR(norm, double(c["grad_norms"][s]), 1e-5 * norm) << "seed " << c["seed"] << " step " << s;
      ops.clip_and_check(sumsq, check, max_norm, coef);
      EXPECT_NEAR(coef.f32()[0], float(c["clip_coefs"][s]), 1e-6f);
      EXPECT_EQ(coef.f32()[1], 1.f);
      a.step = int64_t(s) + 1;
      ops.adamw_step(p, g, m, v, nullptr, a, coef);
    }
    const auto vec = [](const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); };
    EXPECT_LT(rel_l2(vec(p), c["param"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
    EXPECT_LT(rel_l2(vec(m), c["exp_avg"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
    EXPECT_LT(rel_l2(vec(v), c["exp_avg_sq"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
  }
}

// diffusers.optimization.get_scheduler driven for 20 steps; the factor is computed in double in both.
TEST(Optim, LrSchedulesMatchDiffusers) {
  auto golden = load_optim_golden();
  for (const auto& c : golden["lr"]) {
    LrSchedule s = make_lr_schedule(c["name"], c["base_lr"], c["warmup"], c["total"]);
    for (size_t k = 0; k < c["lrs"].size(); ++k)
      EXPECT_NEAR(s.lr_at(int64_t(k)), double(c["lrs"][k]), 1e-12)
          << c["name"] << " warmup " << c["warmup"] << " step " << k;
  }
  EXPECT_THROW(make_lr_schedule("polynomial", 1e-5f, 0, 10), Error);
}

TEST(Optim, SumOfSquaresIsOrderStable) {
  CpuOps ops;
  Tensor g = Tensor::empty({300000});
  for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = float(std::sin(double(i)));
  Tensor a = Tensor::zeros({1}, DType::F64), b = Tensor::zeros({1}, DType::F64);
  ops.sum_of_squares(g, a);
  ops.sum_of_squares(g, b);
  EXPECT_EQ(a.data<double>()[0], b.data<double>()[0]);
  EXPECT_EQ(clip_coefficient(0.5, 1.f), 1.f);
  EXPECT_NEAR(clip_coefficient(4.0, 1.f), 0.25f, 1e-6f);
  EXPECT_EQ(clip_coefficient(4.0, 0.f), 1.f);  // max_grad_norm <= 0: no clipping
}

// A non-finite norm or loss skips the update: parameters and moments keep their bits.
TEST(Optim, NonFiniteStepIsSkipped) {
  CpuOps ops;
  Tensor p = Tensor::from_vector({1.f, -2.f}, {2}), m = Tensor::zeros({2}), v = Tensor::zeros({2});
  const Tensor g = Tensor::from_vector({0.5f, 0.25f}, {2});
  Tensor sumsq = Tensor::zeros({2}, DType::F64), coef = Tensor::zeros({2});
  Tensor first = sumsq.slice(0, 1);
  ops.sum_of_squares(g, first);
  Tensor check = Tensor::from_vector({1.f, std::nanf("")}, {2});
  ops.clip_and_check(sumsq, check, 1.f, coef);
  EXPECT_EQ(coef.f32()[1], 0.f);
  AdamWStep a;
  a.lr = 1e-2;
  ops.adamw_step(p, g, m, v, nullptr, a, coef);
  EXPECT_EQ(p.f32()[0], 1.f);
  EXPECT_EQ(m.f32()[1], 0.f);
  check.f32()[1] = 2.f;
  sumsq.data<double>()[1] = std::numeric_limits<double>::infinity();
  ops.clip_and_check(sumsq, check, 1.f, coef);
  EXPECT_EQ(coef.f32()[1], 0.f);
  sumsq.data<double>()[1] = 0;
  ops.clip_and_check(sumsq, check, 1.f, coef);
  EXPECT_EQ(coef.f32()[1], 1.f);
}
