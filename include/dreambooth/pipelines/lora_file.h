#pragma once
// LoRA weight files (pytorch_lora_weights.safetensors), as diffusers' train_dreambooth_lora.py writes them
// and StableDiffusionPipeline.load_lora_weights(dir) reads them: PEFT key names with the component first,
//   unet.<module path>.lora_A.weight [R, K], unet.<module path>.lora_B.weight [N, R]
//   text_encoder.<module path>.lora_A.weight ...            (text-encoder adapters, when trained)
// The text encoder's module paths are written without transformers' "text_model." prefix (transformers
// 5's CLIPTextModel has no such submodule; diffusers maps the names either way) and read with or without.
// The scale alpha / rank is folded into lora_B, so the file means y = W x + B A x: a loader that assumes
// alpha = rank (diffusers, for PEFT files without adapter metadata) applies exactly what was trained. The
// rank and the trained alpha are recorded in the metadata ("dreambooth.lora_rank", "dreambooth.lora_alpha").
#include <string>

#include "dreambooth/core/tensor.h"
#include "dreambooth/nn/param_registry.h"

namespace db {

struct LoraWeights {
  ParamRegistry unet, text_encoder;  // names as nn/lora.h (text encoder: "text_model." prefixed)
  Tensor unet_params, te_params;     // host f32 over those (te_params undefined: no adapters)
  int rank = 0;
};

// Writes the adapters (host f32, laid out by the registries; treg/tp may be null) in `dtype`, atomically.
void write_lora_weights(const std::string& path, const ParamRegistry& ureg, const Tensor& up,
                        const ParamRegistry* treg, const Tensor* tp, float scale, float alpha, DType dtype);
// Reads a file written by write_lora_weights or diffusers (PEFT key names, unet./text_encoder. prefixes).
// Other layouts (kohya "lora_unet_...", old diffusers "lora.down") fail with a message saying so.
LoraWeights read_lora_weights(const std::string& path);

// The same adapters in kohya's key format, which AUTOMATIC1111, ComfyUI and diffusers' load_lora_weights
// read: "lora_unet_<module path with '.' -> '_'>.lora_down.weight" (= A), ".lora_up.weight" (= B) and
// ".alpha" (f32 scalar = rank, the scale being folded into B already), "lora_te_text_model_..." for the
// text encoder. Returns the number of modules written.
int write_kohya_lora(const std::string& path, const LoraWeights& w, DType dtype);

}  // namespace db
