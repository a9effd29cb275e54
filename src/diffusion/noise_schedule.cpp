#include "dreambooth/diffusion/noise_schedule.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/diffusion/scheduler_params.h"
#include "dreambooth/models/config.h"

namespace db {

PredictionType parse_prediction_type(const std::string& s, const std::string& what) {
  if (s == "epsilon") return PredictionType::Epsilon;
  if (s == "v_prediction") return PredictionType::VPrediction;
  if (s == "sample") return PredictionType::Sample;
  throw Error(what, ": unsupported value '", s, "' (supported: epsilon, v_prediction, sample)");
}

const char* prediction_type_name(PredictionType p) {
  switch (p) {
    case PredictionType::Epsilon:
      return "epsilon";
    case PredictionType::VPrediction:
      return "v_prediction";
    case PredictionType::Sample:
      return "sample";
  }
  return "?";
}

namespace {

// torch.linspace(start, end, n, dtype=float32) on the CPU (see the header).
std::vector<float> linspace_f32(double start_d, double end_d, int n) {
  std::vector<float> v(size_t(std::max(n, 0)));
  if (n == 1) {
    v[0] = float(start_d);
    return v;
  }
  const float start = float(start_d), end = float(end_d);
  const float step = (end - start) / float(n - 1);
  const int half = n / 2;
  for (int i = 0; i < n; ++i)
    v[size_t(i)] = i < half ? std::fma(step, float(i), start) : std::fma(-step, float(n - 1 - i), end);
  return v;
}

// diffusers' betas_for_alpha_bar with the cosine transform, max_beta 0.999, in double.
std::vector<float> betas_cosine(int n) {
  auto alpha_bar = [](double t) {
    double c = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return c * c;
  };
  std::vector<float> b(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    double t1 = double(i) / n, t2 = double(i + 1) / n;
    b[size_t(i)] = float(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return b;
}

}  // namespace

std::vector<float> make_betas(const std::string& beta_schedule, int num_train_timesteps, double beta_start,
                              double beta_end) {
  DB_CHECK(num_train_timesteps > 0, "num_train_timesteps: expected a positive count, got ",
           num_train_timesteps);
  if (beta_schedule == "linear") return linspace_f32(beta_start, beta_end, num_train_timesteps);
  if (beta_schedule == "scaled_linear") {
    DB_CHECK(beta_start >= 0 && beta_end >= 0,
             "beta_start/beta_end: scaled_linear needs non-negative values, got ", beta_start, " and ",
             beta_end);
    auto b = linspace_f32(std::sqrt(beta_start), std::sqrt(beta_end), num_train_timesteps);
    for (float& x : b) x = x * x;
    return b;
  }
  if (beta_schedule == "squaredcos_cap_v2") return betas_cosine(num_train_timesteps);
  throw Error("beta_schedule: unsupported value '", beta_schedule,
              "' (supported: linear, scaled_linear, squaredcos_cap_v2)");
}

std::vector<float> alphas_cumprod_from_betas(const std::vector<float>& betas) {
  std::vector<float> ac(betas.size());
  double acc = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    acc *= double(1.0f - betas[i]);
    ac[i] = float(acc);
  }
  return ac;
}

NoiseSchedule::NoiseSchedule(const std::string& beta_schedule, int num_train_timesteps, double beta_start,
                             double beta_end, PredictionType prediction_type)
    : betas_(make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)),
      alphas_cumprod_(alphas_cumprod_from_betas(betas_)),
      prediction_(prediction_type) {}

// train_dreambooth.py builds DDPMScheduler.from_pretrained(model, subfolder="scheduler"): fields absent
// from the JSON take DDPMScheduler's defaults, and beta_start/beta_end are the JSON's doubles.
static NoiseSchedule schedule_for(const SchedulerConfig& cfg) {
  const SchedulerParams p = resolve_scheduler_params(cfg, "DDPMScheduler");
  return NoiseSchedule(p.beta_schedule, p.num_train_timesteps, p.beta_start, p.beta_end, p.prediction_type);
}

NoiseSchedule::NoiseSchedule(const SchedulerConfig& cfg) : NoiseSchedule(schedule_for(cfg)) {}

void NoiseSchedule::check_t(int t) const {
  DB_CHECK(t >= 0 && t < num_train_timesteps(), "timestep ", t, " out of range [0, ", num_train_timesteps(),
           ")");
}

float NoiseSchedule::sqrt_alpha_prod(int t) const {
  check_t(t);
  return std::sqrt(alphas_cumprod_[size_t(t)]);
}

float NoiseSchedule::sqrt_one_minus_alpha_prod(int t) const {
  check_t(t);
  return std::sqrt(1.0f - alphas_cumprod_[size_t(t)]);
}

void NoiseSchedule::add_noise(const float* x, const float* eps, const int* t, int64_t batch, int64_t n,
                              float* out) const {
  for (int64_t b = 0; b < batch; ++b) {
    const float sa = sqrt_alpha_prod(t[b]), sb = sqrt_one_minus_alpha_prod(t[b]);
    const float* xb = x + b * n;
    const float* eb = eps + b * n;
    float* ob = out + b * n;
    for (int64_t i = 0; i < n; ++i) {
      const float p = sa * xb[i], q = sb * eb[i];
      ob[i] = p + q;
    }
  }
}

void NoiseSchedule::get_velocity(const float* x, const float* eps, const int* t, int64_t batch, int64_t n,
                                 float* out) const {
  for (int64_t b = 0; b < batch; ++b) {
    const float sa = sqrt_alpha_prod(t[b]), sb = sqrt_one_minus_alpha_prod(t[b]);
    const float* xb = x + b * n;
    const float* eb = eps + b * n;
    float* ob = out + b * n;
    for (int64_t i = 0; i < n; ++i) {
      const float p = sa * eb[i], q = sb * xb[i];
      ob[i] = p - q;
    }
  }
}

static void check_batch(const Tensor& x, const Tensor& eps, const std::vector<int>& t, const char* op) {
  DB_CHECK(x.ndim() >= 1 && x.shape() == eps.shape(), op, ": x ", x.desc(), " and eps ", eps.desc(),
           " must have the same shape [B, ...]");
  DB_CHECK(int64_t(t.size()) == x.dim(0), op, ": ", t.size(), " timesteps for a batch of ", x.dim(0));
}

Tensor NoiseSchedule::add_noise(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const {
  check_batch(x, eps, t, "add_noise");
  Tensor out = Tensor::empty(x.shape());
  const int64_t b = x.dim(0);
  add_noise(x.f32(), eps.f32(), t.data(), b, b ? x.numel() / b : 0, out.f32());
  return out;
}

Tensor NoiseSchedule::get_velocity(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const {
  check_batch(x, eps, t, "get_velocity");
  Tensor out = Tensor::empty(x.shape());
  const int64_t b = x.dim(0);
  get_velocity(x.f32(), eps.f32(), t.data(), b, b ? x.numel() / b : 0, out.f32());
  return out;
}

Tensor NoiseSchedule::target(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const {
  switch (prediction_) {
    case PredictionType::Epsilon:
      check_batch(x, eps, t, "target");
      return eps.clone();
    case PredictionType::VPrediction:
      return get_velocity(x, eps, t);
    case PredictionType::Sample:
      break;
  }
  throw Error("prediction_type: training target for '", prediction_type_name(prediction_),
              "' is not supported (train_dreambooth.py supports epsilon and v_prediction)");
}

float NoiseSchedule::snr(int t) const {
  const float r = sqrt_alpha_prod(t) / sqrt_one_minus_alpha_prod(t);
  return r * r;
}

std::vector<float> NoiseSchedule::min_snr_weights(const std::vector<int>& t, float gamma) const {
  DB_CHECK(gamma > 0, "snr_gamma: expected a positive value, got ", gamma);
  std::vector<float> w(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    const float s = snr(t[i]);
    const float base = std::min(s, gamma) / s;
    w[i] = prediction_ == PredictionType::VPrediction ? base + 1.0f : base;
  }
  return w;
}

std::vector<int> draw_timesteps(uint64_t seed, uint32_t step, uint32_t first_sample, int count,
                                int num_train_timesteps) {
  DB_CHECK(num_train_timesteps > 0, "num_train_timesteps: expected a positive count, got ",
           num_train_timesteps);
  std::vector<int> t(size_t(std::max(count, 0)));
  for (int i = 0; i < count; ++i)
    t[size_t(i)] = int(PhiloxStream(seed, RngPurpose::Timestep, step, first_sample + uint32_t(i))
                           .below(0, uint32_t(num_train_timesteps)));
  return t;
}

Tensor draw_training_noise(uint64_t seed, uint32_t step, uint32_t first_sample, const Shape& shape,
                           float offset) {
  DB_CHECK(shape.size() >= 2, "draw_training_noise: expected a [B, ..., C] shape, got ", shape_str(shape));
  Tensor out = Tensor::empty(shape);
  const int64_t b = shape[0], c = shape.back(), n = shape_numel(shape) / std::max<int64_t>(b, 1);
  float* p = out.f32();
  std::vector<float> off(static_cast<size_t>(c));
  for (int64_t i = 0; i < b; ++i) {
    const uint32_t sample = first_sample + uint32_t(i);
    PhiloxStream(seed, RngPurpose::Noise, step, sample).normals(p + i * n, uint64_t(n));
    if (offset != 0.f) {
      PhiloxStream(seed, RngPurpose::OffsetNoise, step, sample).normals(off.data(), uint64_t(c));
      for (int64_t e = 0; e < n; ++e) p[i * n + e] += offset * off[size_t(e % c)];
    }
  }
  return out;
}

}  // namespace db
