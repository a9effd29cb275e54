#pragma once
// A Stable Diffusion model folder in diffusers layout (DESIGN.md decision 7):
//
//   DIR/model_index.json
//   DIR/unet/config.json          + diffusion_pytorch_model.safetensors (or sharded *.safetensors.index.json)
//   DIR/text_encoder/config.json  + model.safetensors
//   DIR/vae/config.json           + diffusion_pytorch_model.safetensors
//   DIR/scheduler/scheduler_config.json
//   DIR/tokenizer/                  vocab.json, merges.txt, ...
//
// Weights are loaded into one flat f32 buffer laid out by the component's ParamRegistry (conv weights
// permuted to [O, kh, kw, I]); loading reports every missing, unexpected and mis-shaped tensor at once.
// Saving writes config.json and the weights in f32/f16/bf16, atomically.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dreambooth/core/tensor.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"

namespace db {

enum class Component { UNet, TextEncoder, Vae };
const char* component_name(Component c);  // "unet", "text_encoder", "vae"
const std::vector<Component>& all_components();

// The weights of one component on disk.
struct WeightFiles {
  std::string path;                // the .safetensors file or the *.safetensors.index.json
  std::vector<std::string> files;  // the .safetensors file(s) holding tensors (shards when indexed)
  bool sharded = false;
};

// Finds a component folder's weights: BASE.safetensors, BASE.safetensors.index.json, then the .fp16
// variants (BASE = diffusion_pytorch_model, or model for the text encoder). A folder with only
// PyTorch pickles (*.bin) fails with a message saying how to convert them.
WeightFiles find_weight_files(const std::string& component_dir, Component c);

// Reads `weights` (a .safetensors file or index) into a new flat f32 buffer of reg.total_numel()
// elements (alignment padding zero). f16/bf16 tensors are converted. Throws one Error listing every
// missing, unexpected, mis-shaped (and non-float) tensor, first line a summary. For text encoders,
// names without transformers' "text_model." prefix are accepted, and the position_ids buffer is ignored.
Tensor load_weights(const std::string& weights, const ParamRegistry& reg);
// Throws naming `weights` and the first parameter (in registry order) holding a NaN or infinity, with
// how many it holds: a damaged model would otherwise give black images or a silent NaN run.
void check_finite_weights(const std::string& weights, const ParamRegistry& reg, const Tensor& flat);
// The same checks without reading tensor data (inspect).
void check_weights(const std::string& weights, const ParamRegistry& reg);

// Writes the parameters of `flat` (laid out by `reg`) as one safetensors file in `dtype` (F32, F16
// or BF16), conv weights back in PyTorch's [O, I, kh, kw]; atomic (temp file + rename).
void save_weights(const std::string& path, const ParamRegistry& reg, const Tensor& flat, DType dtype);

class ModelFolder {
 public:
  // Reads model_index.json and every component's config; checks that the weights exist (but does not
  // read them). Errors name the file.
  static ModelFolder open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::string component_dir(Component c) const;
  WeightFiles weight_files(Component c) const { return find_weight_files(component_dir(c), c); }
  ParamRegistry registry(Component c) const;
  // load_weights, then check_finite_weights (what generate, prepare and train use).
  Tensor load(Component c, const ParamRegistry& reg) const;
  nlohmann::json config_json(Component c) const;  // what save writes as config.json

  nlohmann::json model_index;
  UNetConfig unet;
  ClipTextConfig text_encoder;
  VaeConfig vae;
  SchedulerConfig scheduler;
  bool has_tokenizer = false;  // tokenizer/vocab.json and merges.txt present

 private:
  std::string dir_;
};

// Saves one component into root/NAME/ (config.json + weights), replacing what was there, through a
// temporary folder renamed into place. `config` is the component's config.json.
void save_component(const std::string& root, Component c, const nlohmann::json& config,
                    const ParamRegistry& reg, const Tensor& flat, DType dtype);

// Writes `j` to `path` atomically (PATH.tmp-PID, fsync, rename), pretty-printed with a final newline.
void write_json_file(const std::string& path, const nlohmann::json& j);

}  // namespace db
