// dreambooth init-model: a random-init Stable Diffusion pipeline folder in diffusers layout, built from
// an embedded preset (src/models/presets/*.json), for tests, demos and benchmarks.
#include <filesystem>
#include <iostream>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/io/random_model.h"
#include "dreambooth/models/presets.h"

namespace db {
namespace {

namespace fs = std::filesystem;

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

  RandomModelOptions o;
  o.preset = preset_name;
  o.dir = out.string();
  o.seed = seed;
  o.dtype = dtype;
  o.overwrite = vm["overwrite"].as<bool>();
  o.progress = [](const std::string& line) { log_info(line); };
  write_random_model(o);
  std::cout << "wrote " << preset_name << " (seed " << seed << ", " << dtype_name(dtype) << ") to "
            << out.string() << "\n";
  return 0;
}

}  // namespace
}  // namespace db

DB_COMMAND(init_model, "init-model", "write a random-init Stable Diffusion model in diffusers layout",
           db::run_init_model);
