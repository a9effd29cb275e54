#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/optim/adamw.h"
#include "dreambooth/optim/grad_clip.h"
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

// torch.optim.AdamW (foreach=False) + clip_grad_norm_ for 3-5 steps. Elementwise fp32 math in the same
// operation order as torch: what remains is the reduction order of the grad norm (double here, float
// in torch) feeding the clip coefficient, ~1e-7 relative. Bound 1e-6 on params and moments.
TEST(Optim, AdamWWithClippingMatchesTorch) {
  auto golden = load_optim_golden();
  for (const auto& c : golden["adamw"]) {
    const int64_t n = c["n"];
    std::vector<float> p = c["param0"].get<std::vector<float>>(), m(size_t(n), 0.f), v(size_t(n), 0.f);
    AdamWConfig cfg;
    cfg.weight_decay = c["weight_decay"];
    const float lr = c["lr"], max_norm = c["max_norm"];
    int64_t step = 0;
    for (size_t s = 0; s < c["grads"].size(); ++s) {
      std::vector<float> g = c["grads"][s].get<std::vector<float>>();
      double norm = std::sqrt(sum_of_squares(g.data(), n));
      EXPECT_NEAR(norm, double(c["grad_norms"][s]), 1e-5 * norm) << "seed " << c["seed"] << " step " << s;
      float coef = clip_coefficient(norm, max_norm);
      EXPECT_NEAR(coef, float(c["clip_coefs"][s]), 1e-6f);
      scale_in_place(g.data(), n, coef);
      adamw_step(p.data(), g.data(), m.data(), v.data(), n, cfg, lr, ++step);
    }
    EXPECT_LT(rel_l2(p, c["param"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
    EXPECT_LT(rel_l2(m, c["exp_avg"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
    EXPECT_LT(rel_l2(v, c["exp_avg_sq"].get<std::vector<float>>()), 1e-6) << "seed " << c["seed"];
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
  std::vector<float> g(300000);
  for (size_t i = 0; i < g.size(); ++i) g[i] = float(std::sin(double(i)));
  double a = sum_of_squares(g.data(), int64_t(g.size()));
  double b = sum_of_squares(g.data(), int64_t(g.size()));
  EXPECT_EQ(a, b);
  EXPECT_EQ(clip_coefficient(0.5, 1.f), 1.f);
  EXPECT_NEAR(clip_coefficient(4.0, 1.f), 0.25f, 1e-6f);
}
