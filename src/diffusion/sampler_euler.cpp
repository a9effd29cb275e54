// Euler (diffusers EulerDiscreteScheduler 0.42, s_churn = 0 as pipelines call it), float32 in
// diffusers' operation order; also the Euler-family schedule shared with Euler ancestral.
//
// Schedule, as diffusers computes it:
//  - timesteps are float32: linspace(0, T-1, n) WITHOUT rounding (999, 749.25, ...), leading
//    arange(n) * (T // n) + steps_offset, trailing round(arange(T, 0, -T/n)) - 1;
//  - sigma_t = sqrt((1 - ac) / ac) in float32, linearly interpolated (float64, np.interp) at the
//    timesteps; with use_karras_sigmas, Karras sigmas between the interpolated ends and timesteps
//    mapped back by _sigma_to_t (fractional); then a final 0 (or sigma_min) and a cast to float32;
//  - init_noise_sigma = max sigma (linspace / trailing) or sqrt(max^2 + 1) (leading);
//  - scale_model_input divides by sqrt(sigma^2 + 1);
//  - the step index starts at the position of the first timestep seen (diffusers' _init_step_index)
//    and advances by one per step.
#include <algorithm>
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {

void detail::euler_schedule(const SchedulerParams& p, int n, bool karras, std::vector<float>& timesteps,
                            std::vector<float>& sigmas) {
  const auto ac =
      alphas_cumprod_from_betas(make_betas(p.beta_schedule, p.num_train_timesteps, p.beta_start, p.beta_end));
  const auto train_sigmas = train_sigmas_f32(ac);
  std::vector<double> sig_d(train_sigmas.begin(), train_sigmas.end());
  std::vector<float> ts;
  if (p.timestep_spacing == "linspace") {
    for (double t : spaced_timesteps("linspace", p.num_train_timesteps, n, 0, false)) ts.push_back(float(t));
  } else if (p.timestep_spacing == "leading") {
    for (double t : spaced_timesteps("leading", p.num_train_timesteps, n, 0, true))
      ts.push_back(float(t) + float(p.steps_offset));
  } else {
    for (double t : spaced_timesteps(p.timestep_spacing, p.num_train_timesteps, n, 0, true))
      ts.push_back(float(t));
  }
  std::vector<double> s;
  for (float t : ts) s.push_back(np_interp_index(double(t), sig_d));
  if (karras) {
    std::vector<double> log_sigmas;
    for (float x : train_sigmas) log_sigmas.push_back(double(std::log(x)));
    s = karras_sigmas(s.back(), s.front(), n);
    ts.clear();
    for (double x : s) ts.push_back(float(sigma_to_t(x, log_sigmas)));
  }
  double last = 0.0;
  if (p.final_sigmas_type == "sigma_min") last = double(std::sqrt((1.0f - ac[0]) / ac[0]));
  timesteps = ts;
  sigmas.clear();
  for (double x : s) sigmas.push_back(float(x));
  sigmas.push_back(float(last));
}

float detail::euler_init_noise_sigma(const SchedulerParams& p, const std::vector<float>& sigmas) {
  const float mx = *std::max_element(sigmas.begin(), sigmas.end());
  if (p.timestep_spacing == "linspace" || p.timestep_spacing == "trailing") return mx;
  return std::sqrt(mx * mx + 1.0f);
}

int detail::euler_step_index(const std::vector<float>& timesteps, float t, const char* sampler) {
  DB_CHECK(!timesteps.empty(), sampler, ": used before set_timesteps()");
  const int i = index_for_timestep(timesteps, t);
  DB_CHECK(i >= 0, sampler, ": timestep ", t, " is not in the schedule");
  return i;
}

Tensor detail::euler_scale_input(const Tensor& x, float sigma) {
  const float d = std::sqrt(sigma * sigma + 1.0f);
  Tensor out = Tensor::empty(x.shape());
  const float* a = x.f32();
  float* o = out.f32();
  for (int64_t i = 0, n = x.numel(); i < n; ++i) o[i] = a[i] / d;
  return out;
}

namespace {

class EulerSampler final : public Sampler {
 public:
  explicit EulerSampler(SchedulerParams p) : Sampler(std::move(p)) {
    // init_noise_sigma before set_timesteps uses the training sigmas, as diffusers does.
    auto ac = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
    sigmas_ = train_sigmas_f32(ac);
    std::reverse(sigmas_.begin(), sigmas_.end());
    sigmas_.push_back(0.f);
  }
  std::string name() const override { return "euler"; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    detail::euler_schedule(p_, num_steps, p_.use_karras_sigmas, timesteps_, sigmas_);
    step_index_ = -1;
    return timesteps_;
  }
  float init_noise_sigma() const override { return detail::euler_init_noise_sigma(p_, sigmas_); }

  Tensor scale_model_input(const Tensor& x, float t) override {
    init_step_index(t);
    return detail::euler_scale_input(x, sigmas_[size_t(step_index_)]);
  }

  Tensor step(const Tensor& model_output, float t, const Tensor& sample, NoiseSource*) override {
    check_step_args(model_output, sample);
    init_step_index(t);
    DB_CHECK(size_t(step_index_) + 1 < sigmas_.size(), "euler: more steps than timesteps");
    const float sigma = sigmas_[size_t(step_index_)];
    const float sigma_hat = sigma * 1.0f;  // gamma = 0 (s_churn = 0)
    const float dt = sigmas_[size_t(step_index_) + 1] - sigma_hat;
    const float s2p1 = sigma * sigma + 1.0f;
    const float v_coef = -sigma / std::sqrt(s2p1);
    Tensor out = Tensor::empty(sample.shape());
    const float* m = model_output.f32();
    const float* x = sample.f32();
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      const float x0 = detail::euler_denoised(p_.prediction_type, m[i], x[i], sigma_hat, s2p1, v_coef);
      const float derivative = (x[i] - x0) / sigma_hat;
      o[i] = x[i] + derivative * dt;
    }
    ++step_index_;
    return out;
  }

 private:
  void init_step_index(float t) {
    if (step_index_ < 0) step_index_ = detail::euler_step_index(timesteps_, t, "euler");
  }
  int step_index_ = -1;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_euler(SchedulerParams p) {
  return std::make_unique<EulerSampler>(std::move(p));
}

}  // namespace db
