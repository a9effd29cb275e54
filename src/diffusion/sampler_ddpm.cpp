// DDPM ancestral sampling (diffusers DDPMScheduler 0.42), float32 in diffusers' operation order.
//
//  - the previous timestep is the next entry of the schedule (-1 after the last, where alpha_prod = 1);
//  - variance_type fixed_small: var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev), clamped at 1e-20;
//    fixed_large: var = 1 - a_t / a_prev;
//  - noise is drawn for every step with t > 0 (none at t == 0).
#include <algorithm>
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {
namespace {

class DdpmSampler final : public Sampler {
 public:
  explicit DdpmSampler(SchedulerParams p) : Sampler(std::move(p)) {
    ac_ = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
  }
  std::string name() const override { return "ddpm"; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    timesteps_.clear();
    for (double t :
         spaced_timesteps(p_.timestep_spacing, p_.num_train_timesteps, num_steps, p_.steps_offset, true))
      timesteps_.push_back(float(t));
    step_index_ = 0;
    return timesteps_;
  }

  Tensor step(const Tensor& model_output, float t_f, const Tensor& sample, NoiseSource* noise) override {
    check_step_args(model_output, sample);
    const int t = detail::timestep_index(t_f, p_.num_train_timesteps, "ddpm");
    const int idx = detail::index_first(timesteps_, t_f);
    DB_CHECK(idx >= 0, "ddpm: timestep ", t_f, " is not in the schedule");
    const int prev_t = size_t(idx) + 1 < timesteps_.size() ? int(timesteps_[size_t(idx) + 1]) : -1;
    const float a_t = ac_[size_t(t)];
    const float a_prev = prev_t >= 0 ? ac_[size_t(prev_t)] : 1.0f;
    const float beta_t = 1.0f - a_t, beta_prev = 1.0f - a_prev;
    const float cur_alpha = a_t / a_prev, cur_beta = 1.0f - cur_alpha;
    const float sa = std::sqrt(a_t), sb = std::sqrt(beta_t);
    const float x0_coeff = (std::sqrt(a_prev) * cur_beta) / beta_t;
    const float cur_coeff = std::sqrt(cur_alpha) * beta_prev / beta_t;
    const float clip = float(p_.clip_sample_range);

    Tensor nz;
    float sigma = 0.f;
    if (t > 0) {
      DB_CHECK(noise != nullptr, "ddpm: step at t = ", t, " needs a noise source");
      nz = Tensor::empty(sample.shape());
      noise->fill(step_index_, nz);
      float var = std::max(beta_prev / beta_t * cur_beta, 1e-20f);
      if (p_.variance_type == "fixed_large") var = cur_beta;
      sigma = std::sqrt(var);
    }
    Tensor out = Tensor::empty(sample.shape());
    const float* m = model_output.f32();
    const float* x = sample.f32();
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      float x0;
      switch (p_.prediction_type) {
        case PredictionType::Epsilon:
          x0 = (x[i] - sb * m[i]) / sa;
          break;
        case PredictionType::VPrediction:
          x0 = sa * x[i] - sb * m[i];
          break;
        default:
          x0 = m[i];
          break;
      }
      if (p_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      float prev = x0_coeff * x0 + cur_coeff * x[i];
      if (t > 0) prev = prev + sigma * nz.f32()[i];
      o[i] = prev;
    }
    ++step_index_;
    return out;
  }

 private:
  std::vector<float> ac_;
  int step_index_ = 0;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_ddpm(SchedulerParams p) {
  return std::make_unique<DdpmSampler>(std::move(p));
}

}  // namespace db
