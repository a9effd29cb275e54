// Sampler base, noise sources, name <-> diffusers class mapping and the factory.
#include "dreambooth/diffusion/sampler.h"

#include <cmath>
#include <cstring>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "sampler_impl.h"

namespace db {

void PhiloxNoiseSource::fill(int step_index, Tensor& out) {
  DB_CHECK(step_index >= 0, "PhiloxNoiseSource: negative step index ", step_index);
  DB_CHECK(out.ndim() >= 1, "PhiloxNoiseSource: expected a [B, ...] tensor, got ", out.desc());
  const int64_t b = out.dim(0), n = b ? out.numel() / b : 0;
  float* p = out.f32();
  for (int64_t i = 0; i < b; ++i)
    PhiloxStream(seed_, RngPurpose::Sampler, uint32_t(step_index) + 1, first_image_ + uint32_t(i))
        .normals(p + i * n, uint64_t(n));
}

void ListNoiseSource::fill(int step_index, Tensor& out) {
  DB_CHECK(next_ < draws_.size(), "ListNoiseSource: no noise left for step ", step_index, " (", draws_.size(),
           " draws given)");
  const auto& d = draws_[next_++];
  DB_CHECK(int64_t(d.size()) == out.numel(), "ListNoiseSource: draw ", next_ - 1, " has ", d.size(),
           " values, step ", step_index, " needs ", out.numel());
  std::memcpy(out.f32(), d.data(), d.size() * sizeof(float));
}

Tensor initial_latents(uint64_t seed, uint32_t first_image, const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  DB_CHECK(t.ndim() >= 1, "initial_latents: expected a [B, ...] shape, got ", shape_str(shape));
  const int64_t b = t.dim(0), n = b ? t.numel() / b : 0;
  for (int64_t i = 0; i < b; ++i)
    PhiloxStream(seed, RngPurpose::Sampler, 0, first_image + uint32_t(i))
        .normals(t.f32() + i * n, uint64_t(n));
  return t;
}

Tensor Sampler::scale_model_input(const Tensor& x, float) {
  return x;
}

void Sampler::check_num_steps(int num_steps) const {
  DB_CHECK(num_steps >= 1 && num_steps <= p_.num_train_timesteps, name(),
           ": number of inference steps must be in [1, num_train_timesteps = ", p_.num_train_timesteps,
           "], got ", num_steps);
}

void Sampler::check_step_args(const Tensor& model_output, const Tensor& sample) const {
  DB_CHECK(!timesteps_.empty(), name(), ": step() before set_timesteps()");
  DB_CHECK(model_output.shape() == sample.shape(), name(), ": model output ", model_output.desc(),
           " and sample ", sample.desc(), " differ in shape");
  DB_CHECK(model_output.dtype() == DType::F32 && sample.dtype() == DType::F32, name(),
           ": float32 tensors expected, got ", model_output.desc(), " and ", sample.desc());
}

namespace detail {

int timestep_index(float t, int num_train_timesteps, const char* sampler) {
  DB_CHECK(std::floor(t) == t && t >= 0 && t < float(num_train_timesteps), sampler, ": timestep ", t,
           " is not an integer in [0, ", num_train_timesteps, ")");
  return int(t);
}

int index_for_timestep(const std::vector<float>& timesteps, float t) {
  int first = -1;
  for (size_t i = 0; i < timesteps.size(); ++i) {
    if (timesteps[i] != t) continue;
    if (first >= 0) return int(i);
    first = int(i);
  }
  return first;
}

int index_first(const std::vector<float>& timesteps, float t) {
  for (size_t i = 0; i < timesteps.size(); ++i)
    if (timesteps[i] == t) return int(i);
  return -1;
}

}  // namespace detail

const std::vector<std::string>& sampler_names() {
  static const std::vector<std::string> names = {
      "pndm", "ddim", "euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_karras", "ddpm"};
  return names;
}

static std::string class_for(const std::string& name) {
  if (name == "pndm") return "PNDMScheduler";
  if (name == "ddim") return "DDIMScheduler";
  if (name == "euler") return "EulerDiscreteScheduler";
  if (name == "euler_ancestral") return "EulerAncestralDiscreteScheduler";
  if (name == "dpmpp_2m" || name == "dpmpp_2m_karras") return "DPMSolverMultistepScheduler";
  if (name == "ddpm") return "DDPMScheduler";
  std::string list;
  for (const auto& n : sampler_names()) list += (list.empty() ? "" : ", ") + n;
  throw Error("sampler: unknown name '", name, "' (valid: ", list, ")");
}

std::unique_ptr<Sampler> make_sampler(const std::string& name, const SchedulerConfig& cfg,
                                      const SamplerOptions& opts) {
  const std::string cls = class_for(name);
  ErrorContext ctx("sampler ", name);
  SchedulerParams p = resolve_scheduler_params(cfg, cls);
  if (opts.sd_pipeline_fixups) {
    auto in_file = [&](const char* key) {
      return !cfg.raw.is_object() || (cfg.raw.contains(key) && !cfg.raw[key].is_null());
    };
    if (!opts.from_pipeline_config || in_file("steps_offset")) p.steps_offset = 1;
    if (!opts.from_pipeline_config || in_file("clip_sample")) p.clip_sample = false;
  }
  DB_CHECK(opts.eta >= 0.f, "eta: expected a value >= 0, got ", opts.eta);
  DB_CHECK(opts.eta == 0.f || name == "ddim", "eta: only the ddim sampler uses eta, got ", opts.eta);
  if (name == "pndm") return detail::make_pndm(std::move(p));
  if (name == "ddim") return detail::make_ddim(std::move(p), opts.eta);
  if (name == "ddpm") return detail::make_ddpm(std::move(p));
  if (name == "euler") return detail::make_euler(std::move(p));
  if (name == "euler_ancestral") return detail::make_euler_ancestral(std::move(p));
  // dpmpp_2m: DPM-Solver++ as configured (2M by default); dpmpp_2m_karras additionally Karras sigmas.
  if (name == "dpmpp_2m_karras") p.use_karras_sigmas = true;
  return detail::make_dpmpp(std::move(p), name);
}

std::string sampler_name_for(const SchedulerConfig& cfg) {
  const std::string& c = cfg.class_name;
  if (c == "PNDMScheduler") return "pndm";
  if (c == "DDIMScheduler") return "ddim";
  if (c == "EulerDiscreteScheduler") return "euler";
  if (c == "EulerAncestralDiscreteScheduler") return "euler_ancestral";
  if (c == "DDPMScheduler") return "ddpm";
  if (c == "DPMSolverMultistepScheduler") {
    bool karras = false;
    if (cfg.raw.is_object() && cfg.raw.contains("use_karras_sigmas") &&
        cfg.raw["use_karras_sigmas"].is_boolean())
      karras = cfg.raw["use_karras_sigmas"].get<bool>();
    return karras ? "dpmpp_2m_karras" : "dpmpp_2m";
  }
  throw Error("scheduler config: _class_name '", c,
              "' has no sampler here (supported: PNDMScheduler, DDIMScheduler, EulerDiscreteScheduler, "
              "EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler, DDPMScheduler); choose one with "
              "--sampler");
}

}  // namespace db
