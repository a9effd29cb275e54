#pragma once
// Inference schedulers ("samplers"): diffusers' PNDM (PLMS path), DDIM, Euler, Euler ancestral,
// DPM-Solver++ multistep (2M, optionally with Karras sigmas) and DDPM, reimplemented elementwise in
// float32 with diffusers' operation order, so a C++ generate loop follows diffusers' latents.
//
// The loop a pipeline runs (StableDiffusionPipeline):
//
//   auto s = make_sampler(name, cfg);                 // or sampler_name_for(cfg) for the config's class
//   const auto& ts = s->set_timesteps(50);
//   x = initial latents * s->init_noise_sigma();
//   for (float t : ts) { m = s->scale_model_input(x, t); eps = unet(m, t); x = s->step(eps, t, x, noise); }
//
// Timesteps are floats because the Euler family uses fractional ones (999, 749.25, ...); the others
// produce integers stored exactly in float. The UNet gets t as diffusers passes it.
//
// Samplers keep state between step() calls (PNDM's ets list, DPM-Solver's previous outputs, the Euler
// step index); set_timesteps() resets it. One sampler serves one batch of latents at a time.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/tensor.h"
#include "dreambooth/diffusion/scheduler_params.h"

namespace db {

// Where stochastic samplers (euler_ancestral, ddpm, ddim with eta > 0) get their N(0,1) noise.
class NoiseSource {
 public:
  virtual ~NoiseSource() = default;
  // Fills `out` (float32 CPU, [B, ...]) with standard normals for denoising step `step_index` (0-based
  // position in the timestep list). Called at most once per step.
  virtual void fill(int step_index, Tensor& out) = 0;
};

// Production noise: image b of the batch (global image index first_image + b) draws
//   PhiloxStream(seed, RngPurpose::Sampler, step_index + 1, first_image + b).normal(e)
// for its flat element e, so an image's noise does not depend on the batch it is generated in or on
// the rank. Stream step 0 belongs to the initial latents (initial_latents()).
class PhiloxNoiseSource final : public NoiseSource {
 public:
  PhiloxNoiseSource(uint64_t seed, uint32_t first_image) : seed_(seed), first_image_(first_image) {}
  void fill(int step_index, Tensor& out) override;

 private:
  uint64_t seed_;
  uint32_t first_image_;
};

// Test noise: hands out the given tensors' data in order (each must have out's element count).
class ListNoiseSource final : public NoiseSource {
 public:
  explicit ListNoiseSource(std::vector<std::vector<float>> draws) : draws_(std::move(draws)) {}
  void fill(int step_index, Tensor& out) override;
  size_t used() const { return next_; }
  size_t size() const { return draws_.size(); }

 private:
  std::vector<std::vector<float>> draws_;
  size_t next_ = 0;
};

// Initial latents N(0,1) of `shape` ([B, ...]); image b uses PhiloxStream(seed, Sampler, 0, first_image + b).
// The pipeline multiplies them by init_noise_sigma().
Tensor initial_latents(uint64_t seed, uint32_t first_image, const Shape& shape);

// Per-call options that are pipeline arguments in diffusers, not scheduler config.
struct SamplerOptions {
  float eta = 0.f;  // DDIM's eta (StableDiffusionPipeline's `eta`, default 0: deterministic)
  // What StableDiffusionPipeline.__init__ does to an "outdated" scheduler config before sampling:
  // steps_offset != 1 -> 1 and clip_sample true -> false (with a deprecation warning). The generate
  // pipeline sets this to sample as diffusers' pipeline does; a bare scheduler does not do it.
  bool sd_pipeline_fixups = false;
  // The sampler replaces the pipeline's scheduler as `pipe.scheduler = <Class>.from_config(
  // pipe.scheduler.config)` does (generate --scheduler): from_config drops every key the file did not
  // hold (diffusers' _use_default_values), the fixed-up ones included, and takes the new class's
  // defaults for them (DDIM/DDPM: clip_sample true, steps_offset 0). The fixups then reach only the
  // keys scheduler_config.json holds.
  bool from_pipeline_config = false;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual std::string name() const = 0;
  const SchedulerParams& params() const { return p_; }

  // Builds the schedule for num_steps denoising steps (1 .. num_train_timesteps) and resets the state.
  // Returns the timesteps in the order the loop visits them (PNDM: num_steps + 1 of them).
  virtual const std::vector<float>& set_timesteps(int num_steps) = 0;
  const std::vector<float>& timesteps() const { return timesteps_; }
  // sigma_t per timestep plus the final one (Euler family, DPM-Solver); empty for the others.
  const std::vector<float>& sigmas() const { return sigmas_; }

  // Factor the initial N(0,1) latents are multiplied by (1 for all but the Euler family).
  virtual float init_noise_sigma() const { return 1.f; }
  // Input the model sees at timestep t (Euler family: x / sqrt(sigma^2 + 1); others: x).
  virtual Tensor scale_model_input(const Tensor& x, float t);
  // One denoising step: the sample at the next timestep. `noise` may be null for deterministic samplers
  // (and for DDIM with eta == 0); stochastic ones throw without it.
  virtual Tensor step(const Tensor& model_output, float t, const Tensor& sample, NoiseSource* noise) = 0;

 protected:
  explicit Sampler(SchedulerParams p) : p_(std::move(p)) {}
  void check_num_steps(int num_steps) const;
  void check_step_args(const Tensor& model_output, const Tensor& sample) const;
  SchedulerParams p_;
  std::vector<float> timesteps_, sigmas_;
};

// Sampler names: pndm, ddim, euler, euler_ancestral, dpmpp_2m, dpmpp_2m_karras, ddpm.
const std::vector<std::string>& sampler_names();
// Builds a sampler from a model's scheduler config as diffusers' `<Class>.from_config(config)` would:
// fields present in cfg.raw (when it holds the parsed JSON) override the target class's defaults; when
// cfg.raw is empty, the struct's fields are taken as given. dpmpp_2m_karras forces use_karras_sigmas.
// Unknown names throw listing the valid ones.
std::unique_ptr<Sampler> make_sampler(const std::string& name, const SchedulerConfig& cfg,
                                      const SamplerOptions& opts = {});
// The sampler a scheduler_config.json selects by its _class_name (PNDMScheduler -> pndm, DDIMScheduler ->
// ddim, EulerDiscreteScheduler -> euler, EulerAncestralDiscreteScheduler -> euler_ancestral,
// DPMSolverMultistepScheduler -> dpmpp_2m or dpmpp_2m_karras when use_karras_sigmas is set,
// DDPMScheduler -> ddpm); other classes throw.
std::string sampler_name_for(const SchedulerConfig& cfg);

}  // namespace db
