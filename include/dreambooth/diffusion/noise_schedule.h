#pragma once
// Training-side noise schedule: betas, alphas_cumprod, the forward process (add_noise), the
// v-prediction target (get_velocity), SNR and min-SNR-gamma loss weights, and the training draws
// (noise, offset noise, timesteps) keyed by (seed, step, global sample) through Philox.
//
// Numerics mirror diffusers (0.42) on the CPU bit for bit where it matters:
//  - linear / scaled_linear betas are torch.linspace(..., dtype=float32): start and end rounded to
//    float, step = (end - start) / (T - 1) in float, value i = fma(step, i, start) for the first half
//    and fma(-step, T - 1 - i, end) for the second (what torch's AVX-512 kernel computes); scaled_linear
//    then squares in float (the endpoints' square roots are taken in double, as Python does).
//  - squaredcos_cap_v2 is computed in double (Python floats) and rounded to float once.
//  - alphas = 1 - betas in float; alphas_cumprod = torch.cumprod on the CPU, which accumulates in double
//    and rounds each prefix product to float.
//  - add_noise / get_velocity: sqrt(ac_t) and sqrt(1 - ac_t) in float, then two float products and one
//    float sum per element (no fused multiply-add), as DDPMScheduler.add_noise / get_velocity.
//  - compute_snr (diffusers.training_utils): (sqrt(ac) / sqrt(1 - ac))^2 in float, not ac / (1 - ac).
#include <cstdint>
#include <string>
#include <vector>

#include "dreambooth/core/tensor.h"

namespace db {

struct SchedulerConfig;

enum class PredictionType { Epsilon, VPrediction, Sample };
// "epsilon" | "v_prediction" | "sample"; anything else throws naming `what` and the valid values.
PredictionType parse_prediction_type(const std::string& s, const std::string& what = "prediction_type");
const char* prediction_type_name(PredictionType p);

// Betas as diffusers' schedulers build them ("linear" | "scaled_linear" | "squaredcos_cap_v2").
std::vector<float> make_betas(const std::string& beta_schedule, int num_train_timesteps, double beta_start,
                              double beta_end);
// torch.cumprod(1 - betas) on the CPU: double accumulator, float outputs.
std::vector<float> alphas_cumprod_from_betas(const std::vector<float>& betas);

class NoiseSchedule {
 public:
  NoiseSchedule(const std::string& beta_schedule, int num_train_timesteps, double beta_start, double beta_end,
                PredictionType prediction_type);
  // As train_dreambooth.py's DDPMScheduler.from_pretrained(model, subfolder="scheduler"): fields absent
  // from cfg.raw take DDPMScheduler's defaults (see scheduler_params.h).
  explicit NoiseSchedule(const SchedulerConfig& cfg);

  int num_train_timesteps() const { return int(betas_.size()); }
  PredictionType prediction_type() const { return prediction_; }
  const std::vector<float>& betas() const { return betas_; }
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }

  float sqrt_alpha_prod(int t) const;            // sqrtf(ac[t])
  float sqrt_one_minus_alpha_prod(int t) const;  // sqrtf(1 - ac[t])

  // x, eps: [B, ...] float32 CPU (any layout; the op is elementwise per sample); t: B timesteps.
  // noisy = sqrt(ac_t) * x + sqrt(1 - ac_t) * eps
  Tensor add_noise(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const;
  // v = sqrt(ac_t) * eps - sqrt(1 - ac_t) * x
  Tensor get_velocity(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const;
  // The regression target of train_dreambooth.py: eps (epsilon) or v (v_prediction); "sample" throws.
  Tensor target(const Tensor& x, const Tensor& eps, const std::vector<int>& t) const;

  // Raw-pointer forms (n = elements per sample) for callers that manage their own buffers.
  void add_noise(const float* x, const float* eps, const int* t, int64_t batch, int64_t n, float* out) const;
  void get_velocity(const float* x, const float* eps, const int* t, int64_t batch, int64_t n,
                    float* out) const;

  // diffusers.training_utils.compute_snr: (sqrt(ac_t) / sqrt(1 - ac_t))^2 in float.
  float snr(int t) const;
  // Per-sample min-SNR-gamma weights exactly as train_dreambooth.py (diffusers 0.42) computes them:
  //   base = min(snr, gamma) / snr;  epsilon / sample: base;  v_prediction: base + 1.
  // (Not min(snr, gamma) / (snr + 1): the script floors the velocity weights at one by adding 1.)
  std::vector<float> min_snr_weights(const std::vector<int>& t, float gamma) const;

 private:
  void check_t(int t) const;
  std::vector<float> betas_, alphas_cumprod_;
  PredictionType prediction_;
};

// ---- training draws (DESIGN.md decision 5) ----
// Every draw is a pure function of (seed, optimizer step, GLOBAL sample index), so it does not depend
// on the rank count, the batch split or the thread count.

// t ~ U{0..T-1} for samples first_sample .. first_sample + count - 1: PhiloxStream(seed, Timestep,
// step, sample).below(0, T).
std::vector<int> draw_timesteps(uint64_t seed, uint32_t step, uint32_t first_sample, int count,
                                int num_train_timesteps);

// Training noise for a batch x of shape [B, ...] (NHWC latents: [B, H, W, C]); sample b uses the global
// index first_sample + b. eps[b, e] = PhiloxStream(seed, Noise, step, sample).normal(e) with e the flat
// element index within the sample.
// With offset > 0 (train_dreambooth.py --offset_noise uses 0.1), adds offset * N(0,1) per (sample,
// channel), broadcast over H and W: eps[b, h, w, c] += offset * PhiloxStream(seed, OffsetNoise, step,
// sample).normal(c). The channel is the LAST dimension (NHWC).
Tensor draw_training_noise(uint64_t seed, uint32_t step, uint32_t first_sample, const Shape& shape,
                           float offset = 0.f);

// The offset-noise strength train_dreambooth.py applies with --offset_noise (hard-coded there).
inline constexpr float kDreamboothOffsetNoise = 0.1f;

}  // namespace db
