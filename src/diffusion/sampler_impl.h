#pragma once
// Internal to src/diffusion: constructors of the concrete samplers and small elementwise helpers.
#include <memory>

#include "dreambooth/diffusion/sampler.h"

namespace db::detail {

std::unique_ptr<Sampler> make_pndm(SchedulerParams p);
std::unique_ptr<Sampler> make_ddim(SchedulerParams p, float eta);
std::unique_ptr<Sampler> make_ddpm(SchedulerParams p);
std::unique_ptr<Sampler> make_euler(SchedulerParams p);
std::unique_ptr<Sampler> make_euler_ancestral(SchedulerParams p);
std::unique_ptr<Sampler> make_dpmpp(SchedulerParams p, const std::string& name);

// The integer timestep a float timestep stands for (DDIM/DDPM/PNDM/DPM-Solver index tables with it).
int timestep_index(float t, int num_train_timesteps, const char* sampler);

// diffusers' index_for_timestep: position of t in the schedule (the second one when t appears twice).
// Returns -1 when t is not in the schedule.
int index_for_timestep(const std::vector<float>& timesteps, float t);
// Position of the first t in the schedule, -1 when absent.
int index_first(const std::vector<float>& timesteps, float t);

// Euler-family schedule (EulerDiscreteScheduler.set_timesteps; EulerAncestral is the karras = false,
// final sigma 0 case): float32 timesteps and n + 1 float32 sigmas.
void euler_schedule(const SchedulerParams& p, int n, bool karras, std::vector<float>& timesteps,
                    std::vector<float>& sigmas);
// Euler family init_noise_sigma: max sigma for linspace/trailing spacing, sqrt(max^2 + 1) for leading.
float euler_init_noise_sigma(const SchedulerParams& p, const std::vector<float>& sigmas);
// Euler family: the step index of t (diffusers' _init_step_index); errors name the sampler.
int euler_step_index(const std::vector<float>& timesteps, float t, const char* sampler);
// Euler family: x / sqrt(sigma^2 + 1), the input scaling of scale_model_input.
Tensor euler_scale_input(const Tensor& x, float sigma);
// Euler family: the denoised estimate x0 from the model output m at noise level sigma, in diffusers'
// float operation order (s2p1 = sigma^2 + 1, v_coef = -sigma / sqrt(s2p1)).
inline float euler_denoised(PredictionType type, float m, float x, float sigma, float s2p1, float v_coef) {
  switch (type) {
    case PredictionType::Epsilon:
      return x - sigma * m;
    case PredictionType::VPrediction:
      return m * v_coef + x / s2p1;
    default:
      return m;
  }
}

}  // namespace db::detail
