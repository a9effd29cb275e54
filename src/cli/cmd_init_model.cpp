// dreambooth init-model: a random-init Stable Diffusion pipeline folder in diffusers layout, built from
// an embedded preset (src/models/presets/*.json), for tests, demos and benchmarks.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "dreambooth/cli/command.h"
#include "text_format.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/init_weights.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/text/clip_vocab.h"

namespace db {
namespace {

namespace fs = std::filesystem;

// The one place that writes tokenizer files (implemented in src/text/clip_vocab.cpp).
void write_tokenizer(const fs::path& dir, const nlohmann::json& tok) {
  fs::create_directories(dir);
  write_clip_tokenizer_files(dir.string(), tok.value("vocab_size", 49408),
                             tok.value("pad_token", std::string("<|endoftext|>")),
                             tok.value("model_max_length", 77));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_init_model(int argc, char** argv) {
  std::string names;
  for (const auto& n : preset_names()) names += (names.empty() ? "" : "|") + n;
  po::options_description opts("options");
  opts.add_options()("preset", po::value<std::string>()->required(), ("architecture: " + names).c_str())(
      "out", po::value<std::string>()->required(), "output folder (diffusers layout)")(
      "seed", po::value<uint64_t>()->default_value(0), "random seed")(
      "dtype", po::value<std::string>()->default_value("fp32"), "weights dtype: fp32|fp16|bf16")(
      "overwrite", po::bool_switch(), "replace an existing non-empty output folder");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth init-model --preset NAME --out DIR [options]",
          "Writes a random-init Stable Diffusion model (model_index.json, unet/, text_encoder/, "
          "vae/, scheduler/, tokenizer/) that diffusers' StableDiffusionPipeline.from_pretrained "
          "loads. Weights are a deterministic function of --seed.",
          opts, vm))
    return 0;
  const std::string preset_name = vm["preset"].as<std::string>();
  const fs::path out = vm["out"].as<std::string>();
  const uint64_t seed = vm["seed"].as<uint64_t>();
  DType dtype;
  try {
    dtype = dtype_from_name(vm["dtype"].as<std::string>());
  } catch (const Error& e) {
    throw UsageError(std::string("init-model: --dtype: ") + e.what());
  }
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw UsageError("init-model: --dtype must be fp32, fp16 or bf16");
  bool known = false;
  for (const auto& n : preset_names()) known |= n == preset_name;
  if (!known) throw UsageError("init-model: unknown --preset '" + preset_name + "' (known: " + names + ")");

  if (fs::exists(out)) {
    if (!fs::is_directory(out)) throw Error(out.string(), ": exists and is not a directory");
    if (!fs::is_empty(out) && !vm["overwrite"].as<bool>())
      throw Error(out.string(), ": exists and is not empty (use --overwrite to replace it)");
  }

  nlohmann::json p = preset(preset_name);
  const std::string src = "preset " + preset_name;
  UNetConfig unet = parse_unet_config(p["unet"], src + ": unet");
  ClipTextConfig te = parse_clip_text_config(p["text_encoder"], src + ": text_encoder");
  VaeConfig vae = parse_vae_config(p["vae"], src + ": vae");
  parse_scheduler_config(p["scheduler"], src + ": scheduler");

  // Build next to the destination, then rename into place (DESIGN.md decision 8).
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = parent / ("." + out.filename().string() + ".tmp-" + pid);
  std::error_code ec;
  fs::create_directories(parent);
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    write_json_file((tmp / "model_index.json").string(), p["model_index"]);
    fs::create_directories(tmp / "scheduler");
    write_json_file((tmp / "scheduler" / "scheduler_config.json").string(), p["scheduler"]);
    write_tokenizer(tmp / "tokenizer", p["tokenizer"]);
    struct Part {
      Component c;
      ParamRegistry reg;
      nlohmann::json config;
    };
    std::vector<Part> parts;
    parts.push_back({Component::UNet, build_unet_registry(unet), p["unet"]});
    parts.push_back({Component::TextEncoder, build_clip_text_registry(te), p["text_encoder"]});
    parts.push_back({Component::Vae, build_vae_registry(vae), p["vae"]});
    for (size_t i = 0; i < parts.size(); ++i) {
      const Part& part = parts[i];
      auto t0 = std::chrono::steady_clock::now();
      Tensor flat = init_weights(part.reg, seed, uint32_t(i));
      double t_init = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
      save_component(tmp.string(), part.c, part.config, part.reg, flat, dtype);
      log_info(component_name(part.c), ": ", with_commas(part.reg.param_count()),
               " parameters, initialised in ", fixed(t_init, 1), " s, written as ", dtype_name(dtype), " in ",
               fixed(seconds_since(t0), 1), " s");
    }
    const fs::path old = parent / ("." + out.filename().string() + ".old-" + pid);
    if (fs::exists(out)) fs::rename(out, old);
    fs::rename(tmp, out);
    fs::remove_all(old, ec);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(out.string(), ": ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  std::cout << "wrote " << preset_name << " (seed " << seed << ", " << dtype_name(dtype) << ") to "
            << out.string() << "\n";
  return 0;
}

}  // namespace
}  // namespace db

DB_COMMAND(init_model, "init-model", "write a random-init Stable Diffusion model in diffusers layout",
           db::run_init_model);
