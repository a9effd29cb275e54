#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/diffusion/sampler.h"
#include "dreambooth/models/config.h"
#include "test_helpers.h"

using namespace db;

namespace {

nlohmann::json load_golden(const char* file) {
  return db::test::golden_json(std::string("samplers/") + file);
}

// The synthetic "model" of tests/reference/make_sampler_golden.py.
Tensor synthetic_model(const Tensor& m, float t) {
  Tensor out = Tensor::empty(m.shape());
  const double c = 0.01 * (double(t) / 1000.0);
  for (int64_t i = 0; i < m.numel(); ++i) out.f32()[i] = float(0.5 * std::tanh(double(m.f32()[i])) + c);
  return out;
}

// A scheduler config as a model folder's scheduler_config.json gives it: the production parser
// (models/config.h), so the class-dependent defaults of absent fields are what is exercised.
SchedulerConfig config_from_json(const nlohmann::json& j) {
  return parse_scheduler_config(j, "scheduler_config.json");
}

// Timesteps must be equal, except Euler with Karras sigmas, whose timesteps are fractional results of
// _sigma_to_t over np.log(float32 sigmas): numpy's SIMD float32 log is not correctly rounded (it
// differs from glibc's logf for ~20% of the table), which moves a timestep by up to ~1e-5.
void expect_timesteps(const std::vector<float>& got, const std::vector<float>& want, bool fractional) {
  if (!fractional) {
    EXPECT_EQ(got, want);
    return;
  }
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i]) + 2e-5) << i;
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
    expect_timesteps(ts, want_ts, c["sampler"] == "euler" && c["config"].value("use_karras_sigmas", false));
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
    const std::vector<float> want = c["final"].get<std::vector<float>>();
    ASSERT_EQ(size_t(x.numel()), want.size());
    const db::test::Diff d = db::test::diff(x.f32(), want.data(), want.size());
    EXPECT_LE(d.rel_l2, 1e-5) << "max abs " << d.max_abs;
    std::printf("  %-36s rel_l2 %.2e  max_abs %.2e\n", name.c_str(), d.rel_l2, d.max_abs);
    worst[c["sampler"]] = std::max(worst[c["sampler"]], d.rel_l2);
    ++n_cases;
  }
  EXPECT_GE(n_cases, 50);
  for (auto& [k, v] : worst) std::printf("  worst %-16s rel_l2 %.2e\n", k.c_str(), v);
}

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

nlohmann::json sd15_json() {
  return {{"_class_name", "PNDMScheduler"}, {"beta_end", 0.012},      {"beta_schedule", "scaled_linear"},
          {"beta_start", 0.00085},          {"clip_sample", false},   {"num_train_timesteps", 1000},
          {"set_alpha_to_one", false},      {"skip_prk_steps", true}, {"steps_offset", 1},
          {"trained_betas", nullptr}};
}

}  // namespace

TEST(Sampler, UnknownNameListsValidOnes) {
  SchedulerConfig cfg = config_from_json(sd15_json());
  const std::string msg = error_of([&] { make_sampler("heun", cfg); });
  EXPECT_NE(msg.find("unknown name 'heun'"), std::string::npos) << msg;
  for (const auto& n : sampler_names()) EXPECT_NE(msg.find(n), std::string::npos) << n;
}

TEST(Sampler, StepCountOutOfRangeFails) {
  SchedulerConfig cfg = config_from_json(sd15_json());
  for (const auto& name : sampler_names()) {
    auto s = make_sampler(name, cfg);
    for (int bad : {0, -3, 1001}) {
      const std::string msg = error_of([&] { s->set_timesteps(bad); });
      EXPECT_NE(msg.find("number of inference steps must be in [1, num_train_timesteps = 1000], got " +
                         std::to_string(bad)),
                std::string::npos)
          << name << ": " << msg;
    }
    EXPECT_EQ(s->set_timesteps(1000).size(), name == "pndm" ? 1001u : 1000u) << name;
    EXPECT_FALSE(s->set_timesteps(1).empty()) << name;
  }
}

TEST(Sampler, DefaultFromClassName) {
  SchedulerConfig cfg;
  const std::pair<const char*, const char*> map[] = {{"PNDMScheduler", "pndm"},
                                                     {"DDIMScheduler", "ddim"},
                                                     {"EulerDiscreteScheduler", "euler"},
                                                     {"EulerAncestralDiscreteScheduler", "euler_ancestral"},
                                                     {"DPMSolverMultistepScheduler", "dpmpp_2m"},
                                                     {"DDPMScheduler", "ddpm"}};
  for (auto [cls, name] : map) {
    cfg.class_name = cls;
    EXPECT_EQ(sampler_name_for(cfg), name);
  }
  cfg.class_name = "DPMSolverMultistepScheduler";
  cfg.raw = {{"_class_name", "DPMSolverMultistepScheduler"}, {"use_karras_sigmas", true}};
  EXPECT_EQ(sampler_name_for(cfg), "dpmpp_2m_karras");
  cfg.class_name = "LMSDiscreteScheduler";
  EXPECT_NE(error_of([&] { sampler_name_for(cfg); }).find("'LMSDiscreteScheduler' has no sampler"),
            std::string::npos);
}

// from_config semantics: SD 1.5's config has no timestep_spacing, so each class uses its own default.
TEST(Sampler, AbsentFieldsTakeTheTargetClassDefaults) {
  SchedulerConfig cfg = config_from_json(sd15_json());
  EXPECT_EQ(resolve_scheduler_params(cfg, "DDIMScheduler").timestep_spacing, "leading");
  EXPECT_EQ(resolve_scheduler_params(cfg, "EulerDiscreteScheduler").timestep_spacing, "linspace");
  EXPECT_EQ(resolve_scheduler_params(cfg, "DPMSolverMultistepScheduler").timestep_spacing, "linspace");
  EXPECT_EQ(resolve_scheduler_params(cfg, "DDIMScheduler").steps_offset, 1);
  EXPECT_DOUBLE_EQ(resolve_scheduler_params(cfg, "DDIMScheduler").beta_start, 0.00085);  // the JSON double
  EXPECT_FALSE(resolve_scheduler_params(cfg, "DDIMScheduler").clip_sample);
  // A config built in code (no raw JSON) is taken as given.
  SchedulerConfig code;
  code.timestep_spacing = "leading";
  EXPECT_EQ(resolve_scheduler_params(code, "EulerDiscreteScheduler").timestep_spacing, "leading");
  EXPECT_DOUBLE_EQ(resolve_scheduler_params(code, "EulerDiscreteScheduler").beta_start, 0.00085);
  auto s = make_sampler("euler", config_from_json(sd15_json()));
  EXPECT_EQ(s->set_timesteps(5), (std::vector<float>{999.f, 749.25f, 499.5f, 249.75f, 0.f}));
}

TEST(Sampler, UnsupportedConfigFailsNamingTheField) {
  auto with = [](const char* key, nlohmann::json v) {
    auto j = sd15_json();
    j[key] = v;
    return config_from_json(j);
  };
  EXPECT_NE(error_of([&] { make_sampler("ddim", with("thresholding", true)); }).find("field 'thresholding'"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_sampler("dpmpp_2m", with("algorithm_type", "sde-dpmsolver++"));
            }).find("field 'algorithm_type': unsupported value 'sde-dpmsolver++'"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { make_sampler("pndm", with("skip_prk_steps", false)); }).find("field 'skip_prk_steps'"),
      std::string::npos);
  // The config parser already refuses this one (as loading a model folder would).
  EXPECT_NE(error_of([&] {
              make_sampler("ddim", with("timestep_spacing", "uniform"));
            }).find("field 'timestep_spacing': unsupported value \"uniform\""),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { make_sampler("ddpm", with("variance_type", "learned")); }).find("field 'variance_type'"),
      std::string::npos);
  EXPECT_NE(error_of([&] { make_sampler("euler", with("use_karras_sigmas", 1)); }).find("expected a boolean"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              make_sampler("euler", with("rescale_betas_zero_snr", true));
            }).find("field 'rescale_betas_zero_snr'"),
            std::string::npos);
  SamplerOptions eta;
  eta.eta = 0.5f;
  EXPECT_NE(
      error_of([&] { make_sampler("euler", with("steps_offset", 1), eta); }).find("only the ddim sampler"),
      std::string::npos);
}

TEST(Sampler, StochasticSamplersNeedNoise) {
  SchedulerConfig cfg = config_from_json(sd15_json());
  Tensor x = Tensor::zeros({1, 2, 2, 4}), m = Tensor::zeros({1, 2, 2, 4});
  for (const char* name : {"euler_ancestral", "ddpm"}) {
    auto s = make_sampler(name, cfg);
    const float t = s->set_timesteps(5)[0];
    Tensor in = s->scale_model_input(x, t);
    EXPECT_NE(error_of([&] { s->step(m, t, in, nullptr); }).find("noise source"), std::string::npos) << name;
  }
  auto ddim = make_sampler("ddim", cfg);  // eta = 0: deterministic, no noise needed
  const float t = ddim->set_timesteps(5)[0];
  EXPECT_NO_THROW(ddim->step(m, t, x, nullptr));
}

// Production noise is keyed by the global image index: image 3 draws the same whether it is generated
// alone or as the second image of a batch starting at 2.
TEST(Sampler, PhiloxNoiseIsPerImage) {
  PhiloxNoiseSource batch(77, 2), single(77, 3);
  Tensor a = Tensor::empty({2, 4, 4, 4}), b = Tensor::empty({1, 4, 4, 4});
  batch.fill(4, a);
  single.fill(4, b);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(a.f32()[64 + i], b.f32()[i]);
  Tensor c = Tensor::empty({1, 4, 4, 4});
  single.fill(5, c);
  EXPECT_NE(c.f32()[0], b.f32()[0]);
  Tensor l2 = initial_latents(77, 2, {2, 4, 4, 4}), l1 = initial_latents(77, 3, {1, 4, 4, 4});
  for (int i = 0; i < 64; ++i) EXPECT_EQ(l2.f32()[64 + i], l1.f32()[i]);
  EXPECT_NE(l1.f32()[0], b.f32()[0]);  // initial latents are their own stream (step 0)
}

// set_timesteps for every sampler x spacing x {1, 2, 3, 7, 13, 25, 50, 99} steps: timesteps exactly (see
// expect_timesteps), sigmas to one float ulp (numpy's float32 log and float64 pow in the Karras path may
// differ from glibc's in the last bit), init_noise_sigma to two.
TEST(Sampler, TimestepTablesMatchDiffusers) {
  auto g = load_golden("samplers.json");
  int rows = 0;
  for (const auto& r : g["timestep_tables"]) {
    const std::string tag = std::string(r["sampler"]) + "/" +
                            r["config"].value("timestep_spacing", "karras") + "/" +
                            std::to_string(r["steps"].get<int>());
    SCOPED_TRACE(tag);
    auto s = make_sampler(r["sampler"], config_from_json(r["config"]));
    expect_timesteps(s->set_timesteps(r["steps"].get<int>()), r["timesteps"].get<std::vector<float>>(),
                     r["sampler"] == "euler" && r["config"].value("use_karras_sigmas", false));
    if (r.contains("sigmas")) {
      const auto want = r["sigmas"].get<std::vector<float>>();
      ASSERT_EQ(s->sigmas().size(), want.size());
      for (size_t i = 0; i < want.size(); ++i)
        EXPECT_NEAR(s->sigmas()[i], want[i], 1.2e-7 * std::abs(want[i])) << i;
      // sqrt(max^2 + 1) (leading spacing) goes through torch's float32 sqrt, which is off by an ulp at times.
      EXPECT_NEAR(s->init_noise_sigma(), r["init_noise_sigma"].get<double>(), 2.5e-7 * s->init_noise_sigma());
    }
    ++rows;
  }
  EXPECT_EQ(rows, 7 * 3 * 8 + 5);
}

// StableDiffusionPipeline forces steps_offset = 1 and clip_sample = false; the option mirrors that.
TEST(Sampler, StableDiffusionPipelineFixups) {
  nlohmann::json j = {{"_class_name", "DDIMScheduler"},
                      {"beta_schedule", "scaled_linear"},
                      {"beta_start", 0.00085},
                      {"beta_end", 0.012}};  // steps_offset 0, clip_sample true by default
  SchedulerConfig cfg = config_from_json(j);
  auto bare = make_sampler("ddim", cfg);
  EXPECT_TRUE(bare->params().clip_sample);
  EXPECT_EQ(bare->set_timesteps(4), (std::vector<float>{750, 500, 250, 0}));
  SamplerOptions o;
  o.sd_pipeline_fixups = true;
  auto sd = make_sampler("ddim", cfg, o);
  EXPECT_FALSE(sd->params().clip_sample);
  EXPECT_EQ(sd->set_timesteps(4), (std::vector<float>{751, 501, 251, 1}));
}

// generate --scheduler X is X.from_config(pipe.scheduler.config): the keys the file lacks were filled
// with the model class's defaults (_use_default_values) and from_config drops them again, fixed up or
// not, so X's own defaults apply: DDIM and DDPM clip x0 (issue 16 item 9: up to 255 levels apart).
TEST(Sampler, SwappedSchedulerTakesItsOwnDefaultsForKeysTheFileLacks) {
  nlohmann::json pndm = {{"_class_name", "PNDMScheduler"},
                         {"beta_schedule", "scaled_linear"},
                         {"beta_start", 0.00085},
                         {"beta_end", 0.012},
                         {"skip_prk_steps", true}};  // no clip_sample, no steps_offset
  SamplerOptions swapped;
  swapped.sd_pipeline_fixups = true;
  swapped.from_pipeline_config = true;
  for (const char* name : {"ddim", "ddpm"}) {
    auto s = make_sampler(name, config_from_json(pndm), swapped);
    EXPECT_TRUE(s->params().clip_sample) << name;
    EXPECT_EQ(s->params().steps_offset, 0) << name;
  }
  // The model's own scheduler (no --scheduler) gets the pipeline's in-place fixups in full.
  SamplerOptions own;
  own.sd_pipeline_fixups = true;
  nlohmann::json ddim = pndm;
  ddim["_class_name"] = "DDIMScheduler";
  auto s = make_sampler("ddim", config_from_json(ddim), own);
  EXPECT_FALSE(s->params().clip_sample);
  EXPECT_EQ(s->params().steps_offset, 1);
  // Keys the file holds are fixed up on either path (SD 1.5: clip_sample false, steps_offset 1).
  pndm["clip_sample"] = true;
  pndm["steps_offset"] = 0;
  s = make_sampler("ddim", config_from_json(pndm), swapped);
  EXPECT_FALSE(s->params().clip_sample);
  EXPECT_EQ(s->params().steps_offset, 1);
}

// DPMSolverMultistepScheduler reads variance_type only to drop learned-variance channels: a DDPM
// config's fixed_small is ignored there (as in diffusers); learned variances are refused.
TEST(Sampler, DpmSolverIgnoresFixedVarianceTypes) {
  nlohmann::json j = {{"_class_name", "DDPMScheduler"},
                      {"beta_schedule", "scaled_linear"},
                      {"beta_start", 0.00085},
                      {"beta_end", 0.012},
                      {"variance_type", "fixed_small"}};
  EXPECT_NO_THROW(make_sampler("dpmpp_2m", config_from_json(j)));
  j["variance_type"] = "learned_range";
  EXPECT_NE(error_of([&] { make_sampler("dpmpp_2m", config_from_json(j)); }).find("field 'variance_type'"),
            std::string::npos);
}
