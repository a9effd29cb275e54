#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/diffusion/sampler.h"

using namespace db;

namespace {

nlohmann::json load_golden(const char* file) {
  const char* env = std::getenv("DREAMBOOTH_GOLDEN");
  std::string path = std::string(env ? env : "tests/golden") + "/samplers/" + file;
  std::ifstream f(path);
  if (!f) throw Error(path, ": cannot open (run from the repo root or set DREAMBOOTH_GOLDEN)");
  return nlohmann::json::parse(f);
}

// The synthetic "model" of tests/reference/make_sampler_golden.py.
Tensor synthetic_model(const Tensor& m, float t) {
  Tensor out = Tensor::empty(m.shape());
  const double c = 0.01 * (double(t) / 1000.0);
  for (int64_t i = 0; i < m.numel(); ++i) out.f32()[i] = float(0.5 * std::tanh(double(m.f32()[i])) + c);
  return out;
}

// A SchedulerConfig as the JSON parser would fill it (fields present override the struct defaults),
// with raw = the JSON so absent fields take the target class's defaults.
SchedulerConfig config_from_json(const nlohmann::json& j) {
  SchedulerConfig c;
  c.class_name = j.value("_class_name", c.class_name);
  c.num_train_timesteps = j.value("num_train_timesteps", c.num_train_timesteps);
  c.beta_start = j.value("beta_start", c.beta_start);
  c.beta_end = j.value("beta_end", c.beta_end);
  c.beta_schedule = j.value("beta_schedule", c.beta_schedule);
  c.prediction_type = j.value("prediction_type", c.prediction_type);
  c.timestep_spacing = j.value("timestep_spacing", c.timestep_spacing);
  c.steps_offset = j.value("steps_offset", c.steps_offset);
  c.clip_sample = j.value("clip_sample", c.clip_sample);
  c.set_alpha_to_one = j.value("set_alpha_to_one", c.set_alpha_to_one);
  c.skip_prk_steps = j.value("skip_prk_steps", c.skip_prk_steps);
  c.raw = j;
  return c;
}

struct Diff {
  double rel_l2 = 0, max_abs = 0;
};
Diff compare(const float* a, const std::vector<float>& b) {
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * b[i];
    mx = std::max(mx, std::abs(d));
  }
  return {std::sqrt(num / std::max(den, 1e-300)), mx};
}

}  // namespace

// Runs every golden case: diffusers' scheduler loop on a synthetic model, 5-50 steps. Timesteps must
// match exactly. The latents follow the same float32 elementwise operations in the same order; what can
// differ is the last bit of libm/SLEEF functions (tanh in the model, log/exp/sqrt of scalars, numpy's
// log/pow in the Karras schedule) and torch's scalar-division strategy, amplified by at most a few
// dozen steps: the bound is relative L2 <= 1e-5 on the final latents (observed ~1e-7).
TEST(Sampler, MatchesDiffusersGolden) {
  auto g = load_golden("samplers.json");
  const auto init = g["init"].get<std::vector<float>>();
  const Shape shape = g["shape"].get<Shape>();
  std::map<std::string, double> worst;
  int n_cases = 0;
  for (const auto& c : g["cases"]) {
    const std::string name = c["name"];
    SCOPED_TRACE(name);
    SchedulerConfig cfg = config_from_json(c["config"]);
    SamplerOptions opts;
    opts.eta = c["eta"].get<float>();
    auto s = make_sampler(c["sampler"], cfg, opts);
    const auto& ts = s->set_timesteps(c["steps"].get<int>());
    const auto want_ts = c["timesteps"].get<std::vector<float>>();
    ASSERT_EQ(ts, want_ts);
    if (c.contains("sigmas")) {
      const auto want = c["sigmas"].get<std::vector<float>>();
      ASSERT_EQ(s->sigmas().size(), want.size());
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_NEAR(s->sigmas()[i], want[i], 1e-6 * std::abs(want[i])) << i;
    }
    const float sigma0 = s->init_noise_sigma();
    EXPECT_NEAR(sigma0, c["init_noise_sigma"].get<double>(), 1e-6 * sigma0);
    Tensor x = Tensor::from_vector(init, shape);
    const float scale = c["init_scale"].get<float>();
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = (x.f32()[i] * scale) * sigma0;
    ListNoiseSource noise(c["noise"].get<std::vector<std::vector<float>>>());
    for (float t : ts) {
      Tensor m = s->scale_model_input(x, t);
      x = s->step(synthetic_model(m, t), t, x, &noise);
    }
    EXPECT_EQ(noise.used(), noise.size());
    Diff d = compare(x.f32(), c["final"].get<std::vector<float>>());
    EXPECT_LE(d.rel_l2, 1e-5) << "max abs " << d.max_abs;
    std::printf("  %-36s rel_l2 %.2e  max_abs %.2e\n", name.c_str(), d.rel_l2, d.max_abs);
    worst[c["sampler"]] = std::max(worst[c["sampler"]], d.rel_l2);
    ++n_cases;
  }
  EXPECT_GE(n_cases, 50);
  for (auto& [k, v] : worst) std::printf("  worst %-16s rel_l2 %.2e\n", k.c_str(), v);
}
