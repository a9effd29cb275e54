#pragma once
// Every scheduler_config.json field a diffusers scheduler class reads, resolved for one target class
// the way `<Class>.from_config(config)` resolves it: the class's own __init__ defaults, overridden by the
// fields the config holds. This matters because SD checkpoints ship a PNDMScheduler config without
// `timestep_spacing`, and each class defaults it differently (PNDM/DDIM/DDPM "leading", Euler and
// DPM-Solver "linspace").
//
// Also the small numeric helpers shared by the samplers (timestep spacings, np.interp, _sigma_to_t,
// Karras sigmas), exposed for tests.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>  // SchedulerConfig holds an nlohmann::json by value

#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/models/config.h"

namespace db {

struct SchedulerParams {
  std::string class_name;  // diffusers class the parameters were resolved for
  int num_train_timesteps = 1000;
  double beta_start = 0.0001, beta_end = 0.02;  // doubles: what Python computes with
  std::string beta_schedule = "linear";
  PredictionType prediction_type = PredictionType::Epsilon;
  std::string timestep_spacing = "leading";
  int steps_offset = 0;
  bool clip_sample = true;
  double clip_sample_range = 1.0;
  bool set_alpha_to_one = true;
  bool skip_prk_steps = false;
  std::string variance_type = "fixed_small";  // DDPM
  // Euler / DPM-Solver
  bool use_karras_sigmas = false;
  std::string final_sigmas_type = "zero";
  std::string interpolation_type = "linear";
  std::string timestep_type = "discrete";
  // DPM-Solver
  int solver_order = 2;
  std::string algorithm_type = "dpmsolver++";
  std::string solver_type = "midpoint";
  bool lower_order_final = true;
  bool euler_at_final = false;
};

// Defaults of a diffusers class's __init__ (PNDMScheduler, DDIMScheduler, DDPMScheduler,
// EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler).
SchedulerParams scheduler_class_defaults(const std::string& class_name);

// from_config semantics (see the top of this file). Throws for values the samplers do not implement
// (thresholding, rescale_betas_zero_snr, trained_betas, exponential/beta/lu sigmas, SDE or non-++
// DPM-Solver variants, learned variances, ...), naming the field and the value.
SchedulerParams resolve_scheduler_params(const SchedulerConfig& cfg, const std::string& class_name);

// ---- helpers (numpy float64 semantics unless said otherwise) ----

// The common three spacings of set_timesteps for PNDM/DDIM/DDPM/Euler, as numpy computes them, in
// DESCENDING order (PNDM reverses its own copy): linspace = round(linspace(0, T-1, n)) (Euler: no
// rounding), leading = arange(n) * (T // n) + steps_offset, trailing = round(arange(T, 0, -T/n)) - 1.
// `round_linspace` false keeps linspace fractional (Euler family, then rounded to float).
std::vector<double> spaced_timesteps(const std::string& spacing, int num_train_timesteps, int n,
                                     int steps_offset, bool round_linspace);
// np.round: half to even.
double np_round(double x);
// np.interp(x, arange(len(fp)), fp) for one x (fp as float64).
double np_interp_index(double x, const std::vector<double>& fp);
// diffusers' _sigma_to_t: fractional timestep of sigma on log_sigmas (ascending in t).
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas);
// Karras et al. (2022) rho = 7 sigmas from sigma_max down to sigma_min, n values (float64).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n);
// sqrt((1 - ac) / ac) per train timestep, in float as torch computes it.
std::vector<float> train_sigmas_f32(const std::vector<float>& alphas_cumprod);

}  // namespace db
