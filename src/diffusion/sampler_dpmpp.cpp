// DPM-Solver++ multistep (diffusers DPMSolverMultistepScheduler 0.42 with algorithm_type
// "dpmsolver++"), orders 1-3, midpoint or heun second-order update; float32 in diffusers' order.
//
// Schedule (differs from the other classes!): n + 1 points with the last dropped, i.e.
//   linspace: round(linspace(0, T-1, n+1))[::-1][:-1];  leading: arange(n+1) * (T // (n+1)), reversed,
//   last dropped, + steps_offset;  trailing: round(arange(T, 0, -T/n)) - 1.
// Sigmas are np.interp'ed at the integer timesteps; with use_karras_sigmas they are Karras sigmas
// between the TRAINING sigmas' ends and the timesteps are round(_sigma_to_t(sigma)). A final sigma of 0
// (final_sigmas_type "zero") or sigma_min is appended.
// Stepping: the model output is converted to x0; the first step is first order, then second (or third)
// order from the stored x0 history; the last step is first order when final_sigmas_type is "zero",
// euler_at_final, or lower_order_final with fewer than 15 steps (and with lower_order_final and < 15
// steps, the second-to-last is at most second order).
#include <cmath>

#include "dreambooth/core/error.h"
#include "sampler_impl.h"

namespace db {
namespace {

class DpmppSampler final : public Sampler {
 public:
  DpmppSampler(SchedulerParams p, std::string name) : Sampler(std::move(p)), name_(std::move(name)) {
    ac_ = alphas_cumprod_from_betas(
        make_betas(p_.beta_schedule, p_.num_train_timesteps, p_.beta_start, p_.beta_end));
  }
  std::string name() const override { return name_; }

  const std::vector<float>& set_timesteps(int num_steps) override {
    check_num_steps(num_steps);
    const int T = p_.num_train_timesteps, n = num_steps, last_timestep = T;
    std::vector<double> ts;
    if (p_.timestep_spacing == "linspace") {
      const double step = double(last_timestep - 1) / double(n);  // linspace(0, last-1, n+1)
      for (int i = n; i >= 1; --i)
        ts.push_back(np_round(i == n ? double(last_timestep - 1) : double(i) * step));
    } else if (p_.timestep_spacing == "leading") {
      const int ratio = last_timestep / (n + 1);
      for (int i = n; i >= 1; --i) ts.push_back(double(i * ratio + p_.steps_offset));
    } else {
      ts = spaced_timesteps("trailing", T, n, 0, true);
    }
    const auto train_sigmas = train_sigmas_f32(ac_);
    std::vector<double> s;
    if (p_.use_karras_sigmas) {
      std::vector<double> log_sigmas;
      for (float x : train_sigmas) log_sigmas.push_back(double(std::log(x)));
      s = karras_sigmas(double(train_sigmas.front()), double(train_sigmas.back()), n);
      ts.clear();
      for (double x : s) {
        double t = sigma_to_t(x, log_sigmas);
        ts.push_back(p_.beta_schedule != "squaredcos_cap_v2" ? np_round(t) : t);
      }
    } else {
      std::vector<double> sig_d(train_sigmas.begin(), train_sigmas.end());
      for (double t : ts) s.push_back(np_interp_index(t, sig_d));
    }
    double last = 0.0;
    if (p_.final_sigmas_type == "sigma_min") last = double(std::sqrt((1.0f - ac_[0]) / ac_[0]));
    sigmas_.clear();
    for (double x : s) sigmas_.push_back(float(x));
    sigmas_.push_back(float(last));
    timesteps_.clear();
    for (double t : ts) timesteps_.push_back(float(int64_t(t)));  // astype(int64): truncation
    outputs_.assign(size_t(p_.solver_order), Tensor());
    lower_order_nums_ = 0;
    step_index_ = -1;
    return timesteps_;
  }

  Tensor step(const Tensor& model_output, float t, const Tensor& sample, NoiseSource*) override {
    check_step_args(model_output, sample);
    if (step_index_ < 0) {
      step_index_ = detail::index_for_timestep(timesteps_, t);
      if (step_index_ < 0) step_index_ = int(timesteps_.size()) - 1;  // what diffusers does
    }
    DB_CHECK(size_t(step_index_) < timesteps_.size(), name_, ": more steps than timesteps");
    const int len = int(timesteps_.size());
    const bool lower_order_final =
        step_index_ == len - 1 &&
        (p_.euler_at_final || (p_.lower_order_final && len < 15) || p_.final_sigmas_type == "zero");
    const bool lower_order_second = step_index_ == len - 2 && p_.lower_order_final && len < 15;

    // convert_model_output: x0 prediction
    const float sigma = sigmas_[size_t(step_index_)];
    float alpha_t, sigma_t;
    alpha_sigma(sigma, alpha_t, sigma_t);
    Tensor x0 = Tensor::empty(sample.shape());
    {
      const float* m = model_output.f32();
      const float* x = sample.f32();
      float* o = x0.f32();
      for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
        switch (p_.prediction_type) {
          case PredictionType::Epsilon:
            o[i] = (x[i] - sigma_t * m[i]) / alpha_t;
            break;
          case PredictionType::VPrediction:
            o[i] = alpha_t * x[i] - sigma_t * m[i];
            break;
          default:
            o[i] = m[i];
            break;
        }
      }
    }
    for (int i = 0; i + 1 < p_.solver_order; ++i) outputs_[size_t(i)] = outputs_[size_t(i) + 1];
    outputs_.back() = x0;

    Tensor out;
    if (p_.solver_order == 1 || lower_order_nums_ < 1 || lower_order_final)
      out = first_order(x0, sample);
    else if (p_.solver_order == 2 || lower_order_nums_ < 2 || lower_order_second)
      out = second_order(sample);
    else
      out = third_order(sample);
    if (lower_order_nums_ < p_.solver_order) ++lower_order_nums_;
    ++step_index_;
    return out;
  }

 private:
  // _sigma_to_alpha_sigma_t
  static void alpha_sigma(float sigma, float& alpha, float& sig) {
    alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    sig = sigma * alpha;
  }
  static float lambda(float alpha, float sig) { return std::log(alpha) - std::log(sig); }

  Tensor first_order(const Tensor& m0, const Tensor& sample) const {
    float alpha_t, sigma_t, alpha_s, sigma_s;
    alpha_sigma(sigmas_[size_t(step_index_) + 1], alpha_t, sigma_t);
    alpha_sigma(sigmas_[size_t(step_index_)], alpha_s, sigma_s);
    const float h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
    const float a = sigma_t / sigma_s;
    const float b = alpha_t * (std::exp(-h) - 1.0f);
    Tensor out = Tensor::empty(sample.shape());
    const float* x = sample.f32();
    const float* m = m0.f32();
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) o[i] = a * x[i] - b * m[i];
    return out;
  }

  Tensor second_order(const Tensor& sample) const {
    const size_t i0 = size_t(step_index_);
    float alpha_t, sigma_t, alpha_s0, sigma_s0, alpha_s1, sigma_s1;
    alpha_sigma(sigmas_[i0 + 1], alpha_t, sigma_t);
    alpha_sigma(sigmas_[i0], alpha_s0, sigma_s0);
    alpha_sigma(sigmas_[i0 - 1], alpha_s1, sigma_s1);
    const float lt = lambda(alpha_t, sigma_t), l0 = lambda(alpha_s0, sigma_s0),
                l1 = lambda(alpha_s1, sigma_s1);
    const float h = lt - l0, h0 = l0 - l1;
    const float r0 = h0 / h;
    const float inv_r0 = 1.0f / r0;
    const float a = sigma_t / sigma_s0;
    const float em1 = std::exp(-h) - 1.0f;
    const float b = alpha_t * em1;
    const bool heun = p_.solver_type == "heun";
    const float c = heun ? alpha_t * (em1 / h + 1.0f) : 0.5f * (alpha_t * em1);
    const size_t k = outputs_.size();
    const float* m0 = outputs_[k - 1].f32();
    const float* m1 = outputs_[k - 2].f32();
    const float* x = sample.f32();
    Tensor out = Tensor::empty(sample.shape());
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      const float d1 = inv_r0 * (m0[i] - m1[i]);
      o[i] = heun ? (a * x[i] - b * m0[i]) + c * d1 : (a * x[i] - b * m0[i]) - c * d1;
    }
    return out;
  }

  Tensor third_order(const Tensor& sample) const {
    const size_t i0 = size_t(step_index_);
    float at, st, a0, s0, a1, s1, a2, s2;
    alpha_sigma(sigmas_[i0 + 1], at, st);
    alpha_sigma(sigmas_[i0], a0, s0);
    alpha_sigma(sigmas_[i0 - 1], a1, s1);
    alpha_sigma(sigmas_[i0 - 2], a2, s2);
    const float lt = lambda(at, st), l0 = lambda(a0, s0), l1 = lambda(a1, s1), l2 = lambda(a2, s2);
    const float h = lt - l0, h0 = l0 - l1, h1 = l1 - l2;
    const float r0 = h0 / h, r1 = h1 / h;
    const float inv_r0 = 1.0f / r0, inv_r1 = 1.0f / r1, w = r0 / (r0 + r1), inv_r01 = 1.0f / (r0 + r1);
    const float em1 = std::exp(-h) - 1.0f;
    const float a = st / s0, b = at * em1, c = at * (em1 / h + 1.0f), d = at * ((em1 + h) / (h * h) - 0.5f);
    const size_t k = outputs_.size();
    const float *m0 = outputs_[k - 1].f32(), *m1 = outputs_[k - 2].f32(), *m2 = outputs_[k - 3].f32();
    const float* x = sample.f32();
    Tensor out = Tensor::empty(sample.shape());
    float* o = out.f32();
    for (int64_t i = 0, n = sample.numel(); i < n; ++i) {
      const float d10 = inv_r0 * (m0[i] - m1[i]), d11 = inv_r1 * (m1[i] - m2[i]);
      const float D1 = d10 + w * (d10 - d11), D2 = inv_r01 * (d10 - d11);
      o[i] = ((a * x[i] - b * m0[i]) + c * D1) - d * D2;
    }
    return out;
  }

  std::string name_;
  std::vector<float> ac_;
  std::vector<Tensor> outputs_;
  int lower_order_nums_ = 0, step_index_ = -1;
};

}  // namespace

std::unique_ptr<Sampler> detail::make_dpmpp(SchedulerParams p, const std::string& name) {
  return std::make_unique<DpmppSampler>(std::move(p), name);
}

}  // namespace db
