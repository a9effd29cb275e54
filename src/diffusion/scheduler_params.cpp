#include "dreambooth/diffusion/scheduler_params.h"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "dreambooth/core/error.h"

namespace db {

SchedulerParams scheduler_class_defaults(const std::string& class_name) {
  SchedulerParams p;  // the struct's defaults are DDIM/DDPM-like; adjust per class
  p.class_name = class_name;
  if (class_name == "PNDMScheduler") {
    p.clip_sample = false;  // not a PNDM field
    p.set_alpha_to_one = false;
    p.skip_prk_steps = false;
  } else if (class_name == "DDIMScheduler") {
  } else if (class_name == "DDPMScheduler") {
  } else if (class_name == "EulerDiscreteScheduler" || class_name == "EulerAncestralDiscreteScheduler" ||
             class_name == "DPMSolverMultistepScheduler") {
    p.clip_sample = false;
    p.timestep_spacing = "linspace";
  } else {
    throw Error("scheduler class '", class_name,
                "' is not supported (supported: PNDMScheduler, DDIMScheduler, DDPMScheduler, "
                "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)");
  }
  return p;
}

namespace {

// A float config field as the decimal the user most likely wrote (0.00085f -> 0.00085), which is the
// double diffusers computes with.
double float_as_decimal(float f) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf) - 1, f);
  *r.ptr = 0;
  return std::strtod(buf, nullptr);
}

struct RawReader {
  const nlohmann::json* raw;  // null when the config was built in code
  const std::string& cls;
  bool has(const char* key) const { return raw && raw->contains(key) && !(*raw)[key].is_null(); }
  [[noreturn]] void bad_type(const char* key, const char* want) const {
    throw Error("scheduler config (", cls, "): field '", key, "': expected ", want, ", got ",
                (*raw)[key].dump());
  }
  void get(const char* key, bool& v) const {
    if (!has(key)) return;
    if (!(*raw)[key].is_boolean()) bad_type(key, "a boolean");
    v = (*raw)[key].get<bool>();
  }
  void get(const char* key, int& v) const {
    if (!has(key)) return;
    if (!(*raw)[key].is_number_integer()) bad_type(key, "an integer");
    v = (*raw)[key].get<int>();
  }
  void get(const char* key, double& v) const {
    if (!has(key)) return;
    if (!(*raw)[key].is_number()) bad_type(key, "a number");
    v = (*raw)[key].get<double>();
  }
  void get(const char* key, std::string& v) const {
    if (!has(key)) return;
    if (!(*raw)[key].is_string()) bad_type(key, "a string");
    v = (*raw)[key].get<std::string>();
  }
  // Fields whose non-default values the samplers do not implement.
  void reject_true(const char* key) const {
    bool v = false;
    get(key, v);
    if (v) throw Error("scheduler config (", cls, "): field '", key, "': true is not supported");
  }
  void reject_present(const char* key) const {
    if (has(key))
      throw Error("scheduler config (", cls, "): field '", key, "': ", (*raw)[key].dump(),
                  " is not supported (only null)");
  }
};

void check_one_of(const std::string& cls, const char* key, const std::string& v,
                  std::initializer_list<const char*> ok) {
  std::string list;
  for (const char* o : ok) {
    if (v == o) return;
    list += list.empty() ? o : std::string(", ") + o;
  }
  throw Error("scheduler config (", cls, "): field '", key, "': unsupported value '", v,
              "' (supported: ", list, ")");
}

}  // namespace

SchedulerParams resolve_scheduler_params(const SchedulerConfig& cfg, const std::string& class_name) {
  SchedulerParams p = scheduler_class_defaults(class_name);
  const bool from_json = cfg.raw.is_object();
  // Struct fields: taken when the JSON holds them (the parser filled the struct from it), or always when
  // the config was built in code.
  auto take = [&](const char* key) {
    return !from_json || (cfg.raw.contains(key) && !cfg.raw[key].is_null());
  };
  RawReader r{from_json ? &cfg.raw : nullptr, class_name};
  if (take("num_train_timesteps")) p.num_train_timesteps = cfg.num_train_timesteps;
  if (take("beta_start")) p.beta_start = float_as_decimal(cfg.beta_start);
  if (take("beta_end")) p.beta_end = float_as_decimal(cfg.beta_end);
  r.get("beta_start", p.beta_start);  // the JSON's double, exactly what diffusers uses
  r.get("beta_end", p.beta_end);
  if (take("beta_schedule")) p.beta_schedule = cfg.beta_schedule;
  std::string pred = prediction_type_name(p.prediction_type);
  if (take("prediction_type")) pred = cfg.prediction_type;
  if (take("timestep_spacing")) p.timestep_spacing = cfg.timestep_spacing;
  if (take("steps_offset")) p.steps_offset = cfg.steps_offset;
  if (take("clip_sample")) p.clip_sample = cfg.clip_sample;
  if (take("set_alpha_to_one")) p.set_alpha_to_one = cfg.set_alpha_to_one;
  if (take("skip_prk_steps")) p.skip_prk_steps = cfg.skip_prk_steps;
  // Fields the struct does not carry: from the JSON only.
  r.get("clip_sample_range", p.clip_sample_range);
  r.get("variance_type", p.variance_type);
  r.get("use_karras_sigmas", p.use_karras_sigmas);
  r.get("final_sigmas_type", p.final_sigmas_type);
  r.get("interpolation_type", p.interpolation_type);
  r.get("timestep_type", p.timestep_type);
  r.get("solver_order", p.solver_order);
  r.get("algorithm_type", p.algorithm_type);
  r.get("solver_type", p.solver_type);
  r.get("lower_order_final", p.lower_order_final);
  r.get("euler_at_final", p.euler_at_final);

  // Validation, per class (from_config ignores fields a class does not have).
  const std::string& c = class_name;
  DB_CHECK(p.num_train_timesteps > 0, "scheduler config (", c,
           "): field 'num_train_timesteps': expected > 0, got ", p.num_train_timesteps);
  check_one_of(c, "beta_schedule", p.beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"});
  check_one_of(c, "timestep_spacing", p.timestep_spacing, {"leading", "trailing", "linspace"});
  if (c == "PNDMScheduler")
    check_one_of(c, "prediction_type", pred, {"epsilon", "v_prediction"});
  else
    check_one_of(c, "prediction_type", pred, {"epsilon", "v_prediction", "sample"});
  p.prediction_type = parse_prediction_type(pred);
  r.reject_present("trained_betas");
  if (c != "PNDMScheduler") r.reject_true("rescale_betas_zero_snr");
  if (c == "DDIMScheduler" || c == "DDPMScheduler" || c == "DPMSolverMultistepScheduler")
    r.reject_true("thresholding");
  if (c == "PNDMScheduler" && !p.skip_prk_steps)
    throw Error("scheduler config (", c,
                "): field 'skip_prk_steps': false (Runge-Kutta warm-up) is not supported; "
                "Stable Diffusion configs set it to true");
  if (c == "DDPMScheduler") check_one_of(c, "variance_type", p.variance_type, {"fixed_small", "fixed_large"});
  if (c == "EulerDiscreteScheduler" || c == "DPMSolverMultistepScheduler") {
    r.reject_true("use_exponential_sigmas");
    r.reject_true("use_beta_sigmas");
    check_one_of(c, "final_sigmas_type", p.final_sigmas_type, {"zero", "sigma_min"});
  }
  if (c == "EulerDiscreteScheduler") {
    r.reject_present("sigma_min");
    r.reject_present("sigma_max");
    check_one_of(c, "interpolation_type", p.interpolation_type, {"linear"});
    check_one_of(c, "timestep_type", p.timestep_type, {"discrete"});
  }
  if (c == "DPMSolverMultistepScheduler") {
    r.reject_true("use_lu_lambdas");
    r.reject_true("use_flow_sigmas");
    r.reject_true("use_dynamic_shifting");
    if (r.has("lambda_min_clipped")) {
      double l = 0;
      r.get("lambda_min_clipped", l);
      if (!std::isinf(l) || l > 0)
        throw Error("scheduler config (", c, "): field 'lambda_min_clipped': ", l,
                    " is not supported (only -inf)");
    }
    if (p.algorithm_type == "deis") p.algorithm_type = "dpmsolver++";  // what diffusers does
    check_one_of(c, "algorithm_type", p.algorithm_type, {"dpmsolver++"});
    if (p.solver_type == "logrho" || p.solver_type == "bh1" || p.solver_type == "bh2")
      p.solver_type = "midpoint";
    check_one_of(c, "solver_type", p.solver_type, {"midpoint", "heun"});
    DB_CHECK(p.solver_order >= 1 && p.solver_order <= 3, "scheduler config (", c,
             "): field 'solver_order': expected 1, 2 or 3, got ", p.solver_order);
    // DPM-Solver reads variance_type only to drop learned-variance channels; other values (a DDPM
    // config's fixed_small) are ignored there, as diffusers ignores them.
    if (p.variance_type == "learned" || p.variance_type == "learned_range")
      throw Error("scheduler config (", c, "): field 'variance_type': '", p.variance_type,
                  "' (learned variances) is not supported");
  }
  return p;
}

// ---- helpers ----

double np_round(double x) {
  return std::nearbyint(x);
}

namespace {
// np.arange(start, stop, step) for doubles: length ceil((stop - start) / step), values start + i * delta
// with delta = (start + step) - start, as numpy's fill does.
std::vector<double> np_arange(double start, double stop, double step) {
  double len_d = std::ceil((stop - start) / step);
  std::vector<double> v(len_d > 0 ? size_t(len_d) : 0);
  if (v.empty()) return v;
  v[0] = start;
  if (v.size() > 1) v[1] = start + step;
  const double delta = (v.size() > 1 ? v[1] : start + step) - start;
  for (size_t i = 2; i < v.size(); ++i) v[i] = start + double(i) * delta;
  return v;
}
}  // namespace

std::vector<double> spaced_timesteps(const std::string& spacing, int num_train_timesteps, int n,
                                     int steps_offset, bool round_linspace) {
  const int T = num_train_timesteps;
  std::vector<double> ts;
  if (spacing == "linspace") {
    // np.linspace(0, T - 1, n): i * ((T - 1) / (n - 1)) + 0, last = T - 1
    const double step = n > 1 ? double(T - 1) / double(n - 1) : 0.0;
    for (int i = 0; i < n; ++i) ts.push_back(i == n - 1 && n > 1 ? double(T - 1) : double(i) * step);
    if (round_linspace)
      for (double& t : ts) t = np_round(t);
    return {ts.rbegin(), ts.rend()};
  }
  if (spacing == "leading") {
    const int ratio = T / n;
    for (int i = n - 1; i >= 0; --i) ts.push_back(double(i * ratio + steps_offset));
    return ts;
  }
  if (spacing == "trailing") {
    const double ratio = double(T) / double(n);
    for (double t : np_arange(double(T), 0.0, -ratio)) ts.push_back(np_round(t) - 1.0);
    return ts;
  }
  throw Error("timestep_spacing: unsupported value '", spacing, "' (supported: leading, trailing, linspace)");
}

double np_interp_index(double x, const std::vector<double>& fp) {
  const size_t n = fp.size();
  DB_CHECK(n >= 1, "np_interp_index: empty table");
  if (x <= 0.0) return fp[0];
  if (x >= double(n - 1)) return fp[n - 1];
  const size_t j = size_t(std::floor(x));
  if (double(j) == x) return fp[j];
  const double slope = (fp[j + 1] - fp[j]) / 1.0;
  return slope * (x - double(j)) + fp[j];
}

double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  // log_sigmas holds float32 values (np.log of a float32 array); low - high is a float32 subtraction.
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const size_t n = log_sigmas.size();
  size_t best = 0;
  long cum = 0, best_cum = -1;
  for (size_t i = 0; i < n; ++i) {
    cum += (log_sigma - log_sigmas[i]) >= 0 ? 1 : 0;
    if (cum > best_cum) {
      best_cum = cum;
      best = i;
    }
  }
  const size_t low_idx = std::min(best, n - 2), high_idx = low_idx + 1;
  const double low = log_sigmas[low_idx], high = log_sigmas[high_idx];
  const double denom = double(float(low) - float(high));
  double w = (low - log_sigma) / denom;
  w = std::clamp(w, 0.0, 1.0);
  return (1.0 - w) * double(low_idx) + w * double(high_idx);
}

std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n) {
  const double rho = 7.0;
  const double min_inv = std::pow(sigma_min, 1.0 / rho), max_inv = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> s(size_t(std::max(n, 0)));
  const double step = n > 1 ? 1.0 / double(n - 1) : 0.0;
  for (int i = 0; i < n; ++i) {
    const double ramp = (i == n - 1 && n > 1) ? 1.0 : double(i) * step;
    s[size_t(i)] = std::pow(max_inv + ramp * (min_inv - max_inv), rho);
  }
  return s;
}

std::vector<float> train_sigmas_f32(const std::vector<float>& ac) {
  std::vector<float> s(ac.size());
  for (size_t i = 0; i < ac.size(); ++i) s[i] = std::sqrt((1.0f - ac[i]) / ac[i]);
  return s;
}

}  // namespace db
