// PNDM with skip_prk_steps (the PLMS path; diffusers PNDMScheduler 0.42), float32 in diffusers' order.
//
// What diffusers does, kept exactly:
//  - n steps give n + 1 timesteps: the ascending spacing a_0 < ... < a_{n-1} is visited as
//    a_{n-1}, a_{n-2}, a_{n-2}, a_{n-3}, ..., a_0 (the second-to-last entry twice);
//  - step 0 stores the model output in `ets` and the sample, and takes a plain step t -> t - T//n;
//  - step 1 (the repeated timestep) does NOT append to ets: it re-steps from the SAVED sample using the
//    average of both outputs, from t + T//n to t (a second-order warm start);
//  - afterwards ets keeps the last 4 outputs and the Adams-Bashforth weights grow with its length:
//    (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24;
//  - the previous timestep is t - T//n regardless of spacing; below 0 it uses final_alpha_cumprod
//    (1 with set_alpha_to_one, else alphas_cumprod[0]).
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {
namespace {

class PndmSampler final : public Sampler {
 public:
  explicit PndmSampler(SchedulerParams p) : Sampler(std::move(p)) {
    ac_ = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
    final_ac_ = p_.set_alpha_to_one ? 1.0f : ac_[0];
  }
  std::string name() const override { return "pndm"; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    n_ = num_steps;
    auto desc = spaced_timesteps(p_.timestep_spacing, p_.num_train_timesteps, n_, p_.steps_offset, true);
    std::vector<double> asc(desc.rbegin(), desc.rend());
    // concatenate([asc[:-1], asc[-2:-1], asc[-1:]])[::-1]
    std::vector<double> plms(asc.begin(), asc.end() - 1);
    if (asc.size() >= 2) plms.push_back(asc[asc.size() - 2]);
    plms.push_back(asc.back());
    timesteps_.assign(plms.rbegin(), plms.rend());
    ets_.clear();
    counter_ = 0;
    cur_sample_ = Tensor();
    return timesteps_;
  }

  Tensor step(const Tensor& model_output, float t_f, const Tensor& sample_in, NoiseSource*) override {
    check_step_args(model_output, sample_in);
    const int ratio = p_.num_train_timesteps / n_;
    int t = int(t_f);
    int prev_t = t - ratio;
    detail::timestep_index(t_f, p_.num_train_timesteps, "pndm");
    if (counter_ != 1) {
      if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
      ets_.push_back(model_output.clone());
    } else {
      prev_t = t;
      t = t + ratio;
    }
    const int64_t n = model_output.numel();
    Tensor eps = Tensor::empty(model_output.shape());
    float* e = eps.f32();
    const float* m = model_output.f32();
    Tensor sample = sample_in;
    const size_t k = ets_.size();
    auto E = [&](size_t back) { return ets_[k - back].f32(); };  // E(1) = ets[-1]
    if (k == 1 && counter_ == 0) {
      std::copy(m, m + n, e);
      cur_sample_ = sample_in.clone();
    } else if (k == 1 && counter_ == 1) {
      const float* e1 = E(1);
      for (int64_t i = 0; i < n; ++i) e[i] = (m[i] + e1[i]) / 2.0f;
      DB_CHECK(cur_sample_.defined(), "pndm: internal error: no saved sample at step 1");
      sample = cur_sample_;
      cur_sample_ = Tensor();
    } else if (k == 2) {
      const float *e1 = E(1), *e2 = E(2);
      for (int64_t i = 0; i < n; ++i) e[i] = (3.0f * e1[i] - e2[i]) / 2.0f;
    } else if (k == 3) {
      const float *e1 = E(1), *e2 = E(2), *e3 = E(3);
      for (int64_t i = 0; i < n; ++i) e[i] = (23.0f * e1[i] - 16.0f * e2[i] + 5.0f * e3[i]) / 12.0f;
    } else {
      const float *e1 = E(1), *e2 = E(2), *e3 = E(3), *e4 = E(4);
      const float c = float(1.0 / 24.0);
      for (int64_t i = 0; i < n; ++i)
        e[i] = c * (55.0f * e1[i] - 59.0f * e2[i] + 37.0f * e3[i] - 9.0f * e4[i]);
    }
    Tensor out = prev_sample(sample, t, prev_t, eps);
    ++counter_;
    return out;
  }

 private:
  // diffusers' _get_prev_sample (formula (9) of the PNDM paper).
  Tensor prev_sample(const Tensor& sample, int t, int prev_t, const Tensor& eps_in) const {
    detail::timestep_index(float(t), p_.num_train_timesteps, "pndm");
    const float a_t = ac_[size_t(t)];
    const float a_prev = prev_t >= 0 ? ac_[size_t(prev_t)] : final_ac_;
    const float beta_t = 1.0f - a_t, beta_prev = 1.0f - a_prev;
    const float sample_coeff = std::sqrt(a_prev / a_t);
    const float denom = a_t * std::sqrt(beta_prev) + std::sqrt(a_t * beta_t * a_prev);
    const float diff = a_prev - a_t;
    const float sa = std::sqrt(a_t), sb = std::sqrt(beta_t);
    Tensor out = Tensor::empty(sample.shape());
    const float* x = sample.f32();
    const float* m = eps_in.f32();
    float* o = out.f32();
    const bool v = p_.prediction_type == PredictionType::VPrediction;
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      const float eps = v ? sa * m[i] + sb * x[i] : m[i];
      o[i] = sample_coeff * x[i] - (diff * eps) / denom;
    }
    return out;
  }

  std::vector<float> ac_;
  float final_ac_ = 1.f;
  int n_ = 0, counter_ = 0;
  std::vector<Tensor> ets_;
  Tensor cur_sample_;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_pndm(SchedulerParams p) {
  return std::make_unique<PndmSampler>(std::move(p));
}

}  // namespace db
