// Euler ancestral (diffusers EulerAncestralDiscreteScheduler 0.42), float32 in diffusers' order.
//
// Same schedule as Euler without Karras sigmas (final sigma 0). Each step goes down to
//   sigma_down = sqrt(sigma_to^2 - sigma_up^2),  sigma_up = sqrt(sigma_to^2 (sigma_from^2 - sigma_to^2) /
//   sigma_from^2)
// and adds sigma_up * noise. Noise is drawn at EVERY step, the last one included (sigma_up = 0 there).
#include <algorithm>
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {
namespace {

class EulerAncestralSampler final : public Sampler {
 public:
  explicit EulerAncestralSampler(SchedulerParams p) : Sampler(std::move(p)) {
    p_.final_sigmas_type = "zero";
    DB_CHECK(p_.prediction_type != PredictionType::Sample,
             "euler_ancestral: prediction_type 'sample' is not supported (diffusers does not implement it "
             "either)");
    auto ac = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
    sigmas_ = train_sigmas_f32(ac);
    std::reverse(sigmas_.begin(), sigmas_.end());
    sigmas_.push_back(0.f);
  }
  std::string name() const override { return "euler_ancestral"; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    detail::euler_schedule(p_, num_steps, false, timesteps_, sigmas_);
    step_index_ = -1;
    return timesteps_;
  }
  float init_noise_sigma() const override { return detail::euler_init_noise_sigma(p_, sigmas_); }

  Tensor scale_model_input(const Tensor& x, float t) override {
    init_step_index(t);
    return detail::euler_scale_input(x, sigmas_[size_t(step_index_)]);
  }

  Tensor step(const Tensor& model_output, float t, const Tensor& sample, NoiseSource* noise) override {
    check_step_args(model_output, sample);
    init_step_index(t);
    DB_CHECK(size_t(step_index_) + 1 < sigmas_.size(), "euler_ancestral: more steps than timesteps");
    DB_CHECK(noise != nullptr, "euler_ancestral: needs a noise source");
    const float sigma = sigmas_[size_t(step_index_)];
    const float sigma_to = sigmas_[size_t(step_index_) + 1];
    const float sf2 = sigma * sigma, st2 = sigma_to * sigma_to;
    const float sigma_up = std::sqrt(st2 * (sf2 - st2) / sf2);
    const float sigma_down = std::sqrt(st2 - sigma_up * sigma_up);
    const float dt = sigma_down - sigma;
    const float s2p1 = sf2 + 1.0f;
    const float v_coef = -sigma / std::sqrt(s2p1);
    Tensor nz = Tensor::empty(sample.shape());
    noise->fill(step_index_, nz);
    Tensor out = Tensor::empty(sample.shape());
    const float* m = model_output.f32();
    const float* x = sample.f32();
    const float* z = nz.f32();
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      const float x0 = detail::euler_denoised(p_.prediction_type, m[i], x[i], sigma, s2p1, v_coef);
      const float derivative = (x[i] - x0) / sigma;
      const float prev = x[i] + derivative * dt;
      o[i] = prev + z[i] * sigma_up;
    }
    ++step_index_;
    return out;
  }

 private:
  void init_step_index(float t) {
    if (step_index_ < 0) step_index_ = detail::euler_step_index(timesteps_, t, "euler_ancestral");
  }
  int step_index_ = -1;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_euler_ancestral(SchedulerParams p) {
  return std::make_unique<EulerAncestralSampler>(std::move(p));
}

}  // namespace db
