#pragma once
// `dreambooth export --format single-file`: a diffusers folder (optionally with LoRA weights merged) as
// one .safetensors in the original Stable Diffusion (LDM) checkpoint layout that AUTOMATIC1111 and
// ComfyUI load, the key mapping of diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
// generalised to any number of levels and layers per block:
//   model.diffusion_model.*      the UNet (input_blocks / middle_block / output_blocks, resnets'
//                                in_layers / out_layers / emb_layers / skip_connection)
//   first_stage_model.*          the VAE (encoder.down.I.block.J, decoder.up.(n-1-I), mid.attn_1 with
//                                1x1-conv-shaped q/k/v/proj_out)
//   cond_stage_model.transformer.text_model.*   the CLIP text encoder (SD 1.x layout)
// SD 2.x text encoders (OpenCLIP layout in the original checkpoints) are not converted: an error says so.
#include <string>

#include "dreambooth/core/dtype.h"

namespace db {

struct ExportOptions {
  std::string model;  // diffusers folder
  std::string out;    // .safetensors
  DType dtype = DType::F16;
  std::string lora;  // "" or a LoRA weights file merged first (pipelines/lora_file.h)
  float lora_scale = 1.f;
};

struct ExportResult {
  int64_t tensors = 0, bytes = 0;
  int lora_merged = 0;  // adapted modules merged
};

ExportResult export_single_file(const ExportOptions& o);

}  // namespace db
