#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/diffusion/scheduler_params.h"
#include "test_helpers.h"

using namespace db;

namespace {

nlohmann::json load_training_golden() {
  return db::test::golden_json("samplers/training.json");
}

// Largest |a - b| / |b| (|b| floored at 1e-30).
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])) / std::max(std::abs(double(b[i])), 1e-30));
  return m;
}

std::vector<float> to_vec(const Tensor& t) {
  return {t.f32(), t.f32() + t.numel()};
}

}  // namespace

// torch.linspace (float32, FMA halves), float squaring and torch.cumprod's double accumulator are
// reproduced, so the tables come out bit-identical; the bound leaves room for one ulp (a CPU without
// AVX-512 runs another torch linspace kernel).
TEST(Schedule, BetasAndAlphasCumprodMatchDiffusers) {
  auto g = load_training_golden();
  for (const auto& s : g["schedules"]) {
    const std::string name = s["beta_schedule"];
    SCOPED_TRACE(name);
    NoiseSchedule ns(name, s["num_train_timesteps"].get<int>(), s["beta_start"].get<double>(),
                     s["beta_end"].get<double>(), PredictionType::Epsilon);
    EXPECT_LE(max_rel(ns.betas(), s["betas"].get<std::vector<float>>()), 1e-7);
    EXPECT_LE(max_rel(ns.alphas_cumprod(), s["alphas_cumprod"].get<std::vector<float>>()), 1e-7);
  }
}

// DDPMScheduler.add_noise / get_velocity: two float products and a float sum per element, like torch.
// Not bit-exact: torch 2.15's CPU float32 sqrt (what `alphas_cumprod ** 0.5` runs) is not correctly
// rounded on this machine (+-1 ulp for ~18% of the table), ours is. A 1-ulp coefficient difference is
// ~1e-7 of each term; velocity cancels, so compare against the size of the terms, not elementwise rel.
TEST(Schedule, AddNoiseAndVelocityMatchDiffusers) {
  auto g = load_training_golden();
  for (const auto& c : g["add_noise"]) {
    NoiseSchedule ns(c["beta_schedule"], 1000, c["beta_start"].get<double>(), c["beta_end"].get<double>(),
                     PredictionType::VPrediction);
    const Shape shape = c["shape"].get<Shape>();
    const auto xv = c["x"].get<std::vector<float>>(), ev = c["eps"].get<std::vector<float>>();
    Tensor x = Tensor::from_vector(xv, shape), eps = Tensor::from_vector(ev, shape);
    const auto t = c["timesteps"].get<std::vector<int>>();
    const auto noisy = to_vec(ns.add_noise(x, eps, t)), vel = to_vec(ns.get_velocity(x, eps, t));
    const auto want_noisy = c["noisy"].get<std::vector<float>>(),
               want_vel = c["velocity"].get<std::vector<float>>();
    const int64_t per = x.numel() / x.dim(0);
    int exact = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      const int b = int(int64_t(i) / per);
      const double scale = ns.sqrt_alpha_prod(t[size_t(b)]) * std::abs(xv[i]) +
                           ns.sqrt_one_minus_alpha_prod(t[size_t(b)]) * std::abs(ev[i]);
      EXPECT_LE(std::abs(double(noisy[i]) - want_noisy[i]), 3e-7 * scale + 1e-30) << i;
      EXPECT_LE(std::abs(double(vel[i]) - want_vel[i]), 3e-7 * scale + 1e-30) << i;
      exact += (noisy[i] == want_noisy[i]) + (vel[i] == want_vel[i]);
    }
    std::printf("  add_noise/get_velocity: %d of %zu values bit-identical to diffusers\n", exact,
                2 * xv.size());
    EXPECT_EQ(to_vec(ns.target(x, eps, t)), vel);
  }
}

// compute_snr and train_dreambooth.py's min-SNR weights (base = min(snr, gamma) / snr; v-prediction
// adds 1).
TEST(Schedule, SnrAndMinSnrWeightsMatchTrainDreambooth) {
  auto g = load_training_golden();
  NoiseSchedule eps("scaled_linear", 1000, 0.00085, 0.012, PredictionType::Epsilon);
  NoiseSchedule v("scaled_linear", 1000, 0.00085, 0.012, PredictionType::VPrediction);
  for (const auto& c : g["snr"]) {
    const auto t = c["timesteps"].get<std::vector<int>>();
    const float gamma = c["gamma"].get<float>();
    std::vector<float> snr;
    for (int ti : t) snr.push_back(eps.snr(ti));
    EXPECT_LE(max_rel(snr, c["snr"].get<std::vector<float>>()), 1e-6);
    EXPECT_LE(max_rel(eps.min_snr_weights(t, gamma), c["weights_epsilon"].get<std::vector<float>>()), 1e-6);
    EXPECT_LE(max_rel(v.min_snr_weights(t, gamma), c["weights_v_prediction"].get<std::vector<float>>()),
              1e-6);
  }
}

TEST(Schedule, TargetFollowsPredictionType) {
  NoiseSchedule e("scaled_linear", 1000, 0.00085, 0.012, PredictionType::Epsilon);
  NoiseSchedule s("scaled_linear", 1000, 0.00085, 0.012, PredictionType::Sample);
  Tensor x = Tensor::from_vector({1, 2, 3, 4}, {2, 2});
  Tensor n = Tensor::from_vector({0.5f, -1, 2, 0.25f}, {2, 2});
  EXPECT_EQ(to_vec(e.target(x, n, {3, 700})), to_vec(n));
  EXPECT_THROW(s.target(x, n, {3, 700}), Error);
  EXPECT_THROW(e.add_noise(x, n, {3}), Error);        // one timestep for two samples
  EXPECT_THROW(e.add_noise(x, n, {3, 1000}), Error);  // t out of range
  // Hand check: noisy = sqrt(ac) x + sqrt(1 - ac) eps at t = 0.
  const float ac0 = e.alphas_cumprod()[0];
  Tensor y = e.add_noise(x, n, {0, 0});
  EXPECT_FLOAT_EQ(y.f32()[1], std::sqrt(ac0) * 2.f + std::sqrt(1 - ac0) * -1.f);
}

TEST(Schedule, ErrorsNameTheOption) {
  try {
    make_betas("cosine", 1000, 0.1, 0.2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("beta_schedule: unsupported value 'cosine'"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("squaredcos_cap_v2"), std::string::npos);
  }
  try {
    parse_prediction_type("x0");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prediction_type: unsupported value 'x0'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(make_betas("linear", 0, 0.1, 0.2), Error);
  NoiseSchedule ns("linear", 1000, 1e-4, 0.02, PredictionType::Epsilon);
  EXPECT_THROW(ns.min_snr_weights({1}, 0.f), Error);
}

// Training draws depend only on (seed, step, global sample): splitting a batch differently (or across
// ranks) draws the same numbers.
TEST(Schedule, TrainingDrawsAreKeyedByGlobalSample) {
  const auto all = draw_timesteps(42, 7, 0, 6, 1000);
  auto a = draw_timesteps(42, 7, 0, 2, 1000), b = draw_timesteps(42, 7, 2, 4, 1000);
  a.insert(a.end(), b.begin(), b.end());
  EXPECT_EQ(all, a);
  for (int t : all) EXPECT_TRUE(t >= 0 && t < 1000);
  EXPECT_NE(draw_timesteps(42, 8, 0, 6, 1000), all);

  const Shape shape{3, 2, 2, 4};  // NHWC
  Tensor n3 = draw_training_noise(5, 1, 10, shape);
  Tensor n1 = draw_training_noise(5, 1, 12, {1, 2, 2, 4});
  for (int i = 0; i < 16; ++i) EXPECT_EQ(n3.f32()[32 + i], n1.f32()[i]);

  // Offset noise: the difference is offset * one N(0,1) per (sample, channel), constant over H and W.
  Tensor o3 = draw_training_noise(5, 1, 10, shape, kDreamboothOffsetNoise);
  for (int s = 0; s < 3; ++s)
    for (int c = 0; c < 4; ++c) {
      const float d0 = o3.f32()[s * 16 + c] - n3.f32()[s * 16 + c];
      EXPECT_NE(d0, 0.f);
      EXPECT_LT(std::abs(d0), 0.1f * 6);
      for (int hw = 1; hw < 4; ++hw)
        EXPECT_NEAR(o3.f32()[s * 16 + hw * 4 + c] - n3.f32()[s * 16 + hw * 4 + c], d0, 1e-6);
    }
  // Rough moments of the noise.
  Tensor big = draw_training_noise(1, 0, 0, {4, 32, 32, 4});
  double m = 0, v = 0;
  for (int64_t i = 0; i < big.numel(); ++i) m += big.f32()[i];
  m /= double(big.numel());
  for (int64_t i = 0; i < big.numel(); ++i) v += (big.f32()[i] - m) * (big.f32()[i] - m);
  v /= double(big.numel());
  EXPECT_NEAR(m, 0.0, 0.05);
  EXPECT_NEAR(v, 1.0, 0.05);
}

// The training schedule from a model's scheduler_config.json resolves like DDPMScheduler.from_pretrained.
TEST(Schedule, FromSchedulerConfig) {
  SchedulerConfig cfg;
  cfg.raw = nlohmann::json{{"_class_name", "PNDMScheduler"},
                           {"beta_schedule", "scaled_linear"},
                           {"beta_start", 0.00085},
                           {"beta_end", 0.012},
                           {"prediction_type", "v_prediction"}};
  cfg.beta_schedule = "scaled_linear";
  cfg.beta_start = 0.00085f;
  cfg.beta_end = 0.012f;
  cfg.prediction_type = "v_prediction";
  NoiseSchedule ns(cfg);
  NoiseSchedule ref("scaled_linear", 1000, 0.00085, 0.012, PredictionType::VPrediction);
  EXPECT_EQ(ns.alphas_cumprod(), ref.alphas_cumprod());
  EXPECT_EQ(ns.prediction_type(), PredictionType::VPrediction);
  cfg.raw = nlohmann::json{{"_class_name", "PNDMScheduler"}};  // nothing given: DDPM's linear 1e-4..0.02
  NoiseSchedule d(cfg);
  EXPECT_EQ(d.betas(), make_betas("linear", 1000, 0.0001, 0.02));
  EXPECT_EQ(d.prediction_type(), PredictionType::Epsilon);
}
