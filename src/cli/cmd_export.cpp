// `dreambooth export`: a model folder as one original-layout checkpoint (pipelines/export.h).
#include <cstdio>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/export.h"

namespace db {
namespace {

int run_export(int argc, char** argv) {
  ExportOptions o;
  std::string format, dtype;
  po::options_description opts("options");
  opts.add_options()("model", po::value(&o.model)->required(), "model folder (diffusers layout, SD 1.x)")(
      "format", po::value(&format)->required(), "single-file: one .safetensors in the original SD layout")(
      "out", po::value(&o.out)->required(), "output file (.safetensors)")(
      "dtype", po::value(&dtype)->default_value("fp16"), "fp16 | bf16 | fp32")(
      "lora", po::value(&o.lora)->default_value(""),
      "LoRA weights (train --lora-rank's pytorch_lora_weights.safetensors) merged into the weights first")(
      "lora-scale", po::value(&o.lora_scale)->default_value(1.f, "1.0"), "scale of the merged LoRA update");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth export --model DIR --format single-file --out FILE.safetensors [options]",
          "Writes the UNet, VAE and text encoder of a diffusers folder as one .safetensors checkpoint in\n"
          "the original Stable Diffusion layout (model.diffusion_model.*, first_stage_model.*,\n"
          "cond_stage_model.transformer.*) that AUTOMATIC1111 and ComfyUI load, as diffusers'\n"
          "convert_diffusers_to_original_stable_diffusion.py does; diffusers reads it back with\n"
          "StableDiffusionPipeline.from_single_file(FILE, config=DIR). SD 1.x models only.",
          opts, vm))
    return 0;
  if (format != "single-file")
    throw UsageError("export: --format must be single-file (got '" + format + "')");
  if (dtype == "fp16")
    o.dtype = DType::F16;
  else if (dtype == "bf16")
    o.dtype = DType::BF16;
  else if (dtype == "fp32")
    o.dtype = DType::F32;
  else
    throw UsageError("export: --dtype must be fp16, bf16 or fp32 (got '" + dtype + "')");
  if (o.lora.empty() && !vm["lora-scale"].defaulted()) throw UsageError("export: --lora-scale needs --lora");
  const ExportResult r = export_single_file(o);
  std::printf(
      "exported %lld tensors (%.1f MB)%s to %s\n", (long long)r.tensors, double(r.bytes) / (1 << 20),
      o.lora.empty() ? "" : (" with " + std::to_string(r.lora_merged) + " LoRA modules merged").c_str(),
      o.out.c_str());
  return 0;
}

}  // namespace

DB_COMMAND(export, "export", "a model folder as one .safetensors in the original SD layout (A1111, ComfyUI)",
           run_export);

}  // namespace db
