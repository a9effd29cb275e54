// DDIM (diffusers DDIMScheduler, 0.42), float32 in diffusers' operation order.
//
// Quirks kept on purpose:
//  - the previous timestep is always t - T // n, whatever the spacing (so with "trailing" or
//    "linspace" it is not the next entry of the schedule);
//  - alpha_prod at t_prev < 0 is final_alpha_cumprod: 1 with set_alpha_to_one, else alphas_cumprod[0];
//  - clip_sample clamps the predicted x0 to +-clip_sample_range;
//  - with eta > 0 the step adds std_dev_t * noise (the only random draw; eta = 0 draws nothing).
#include <algorithm>
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {
namespace {

class DdimSampler final : public Sampler {
 public:
  DdimSampler(SchedulerParams p, float eta) : Sampler(std::move(p)), eta_(eta) {
    ac_ = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
    final_ac_ = p_.set_alpha_to_one ? 1.0f : ac_[0];
  }
  std::string name() const override { return "ddim"; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    n_ = num_steps;
    timesteps_.clear();
    for (double t : spaced_timesteps(p_.timestep_spacing, p_.num_train_timesteps, n_, p_.steps_offset, true))
      timesteps_.push_back(float(t));
    step_index_ = 0;
    return timesteps_;
  }

  Tensor step(const Tensor& model_output, float t_f, const Tensor& sample, NoiseSource* noise) override {
    check_step_args(model_output, sample);
    const int t = detail::timestep_index(t_f, p_.num_train_timesteps, "ddim");
    const int prev_t = t - p_.num_train_timesteps / n_;
    const float a_t = ac_[size_t(t)];
    const float a_prev = prev_t >= 0 ? ac_[size_t(prev_t)] : final_ac_;
    const float beta_t = 1.0f - a_t;
    const float sa = std::sqrt(a_t), sb = std::sqrt(beta_t);
    const float beta_prev = 1.0f - a_prev;
    const float variance = (beta_prev / beta_t) * (1.0f - a_t / a_prev);
    const float std_dev = eta_ * std::sqrt(variance);
    const float dir_coef = std::sqrt((1.0f - a_prev) - std_dev * std_dev);
    const float s_prev = std::sqrt(a_prev);
    const float clip = float(p_.clip_sample_range);

    Tensor out = Tensor::empty(sample.shape());
    Tensor nz;
    if (eta_ > 0.f) {
      DB_CHECK(noise != nullptr, "ddim: eta = ", eta_, " needs a noise source");
      nz = Tensor::empty(sample.shape());
      noise->fill(step_index_, nz);
    }
    const float* m = model_output.f32();
    const float* x = sample.f32();
    float* o = out.f32();
    const int64_t n = sample.numel();
    for (int64_t i = 0; i < n; ++i) {
      float x0, eps;
      switch (p_.prediction_type) {
        case PredictionType::Epsilon:
          x0 = (x[i] - sb * m[i]) / sa;
          eps = m[i];
          break;
        case PredictionType::VPrediction:
          x0 = sa * x[i] - sb * m[i];
          eps = sa * m[i] + sb * x[i];
          break;
        default:  // sample
          x0 = m[i];
          eps = (x[i] - sa * x0) / sb;
          break;
      }
      if (p_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      const float dir = dir_coef * eps;
      float prev = s_prev * x0 + dir;
      if (eta_ > 0.f) prev = prev + std_dev * nz.f32()[i];
      o[i] = prev;
    }
    ++step_index_;
    return out;
  }

 private:
  float eta_;
  std::vector<float> ac_;
  float final_ac_ = 1.f;
  int n_ = 0, step_index_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_ddim(SchedulerParams p, float eta) {
  return std::make_unique<DdimSampler>(std::move(p), eta);
}

}  // namespace db
