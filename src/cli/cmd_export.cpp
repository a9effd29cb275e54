// `dreambooth export`: a model folder as one original-layout checkpoint (pipelines/export.h).
#include <cstdio>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/export.h"
#include "dreambooth/pipelines/lora_file.h"

namespace db {
namespace {

int run_export(int argc, char** argv) {
  ExportOptions o;
  std::string format, dtype;
  po::options_description opts("options");
  opts.add_options()("model", po::value(&o.model),
                     "model folder (diffusers layout, SD 1.x); single-file only")(
      "format", po::value(&format)->required(),
      "single-file: the model as one .safetensors in the original SD layout; kohya-lora: the --lora file in "
      "kohya's key format (lora_unet_*.lora_down/lora_up/alpha)")("out", po::value(&o.out)->required(),
                                                                  "output file (.safetensors)")(
      "dtype", po::value(&dtype)->default_value("fp16"), "fp16 | bf16 | fp32")(
      "lora", po::value(&o.lora)->default_value(""),
      "LoRA weights (train --lora-rank's pytorch_lora_weights.safetensors) merged into the weights first")(
      "lora-scale", po::value(&o.lora_scale)->default_value(1.f, "1.0"), "scale of the merged LoRA update");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv,
          "dreambooth export --model DIR --format single-file --out FILE.safetensors [options]\n"
          "       dreambooth export --format kohya-lora --lora LORA.safetensors --out FILE.safetensors",
          "Writes the UNet, VAE and text encoder of a diffusers folder as one .safetensors checkpoint in\n"
          "the original Stable Diffusion layout (model.diffusion_model.*, first_stage_model.*,\n"
          "cond_stage_model.transformer.*) that AUTOMATIC1111 and ComfyUI load, as diffusers'\n"
          "convert_diffusers_to_original_stable_diffusion.py does; diffusers reads it back with\n"
          "StableDiffusionPipeline.from_single_file(FILE, config=DIR). SD 1.x models only.\n"
          "--format kohya-lora rewrites LoRA weights (train --lora-rank's output) in the kohya key format\n"
          "that AUTOMATIC1111's and ComfyUI's LoRA loaders read (diffusers reads it too).",
          opts, vm))
    return 0;
  if (format != "single-file" && format != "kohya-lora")
    throw UsageError("export: --format must be single-file or kohya-lora (got '" + format + "')");
  if (dtype == "fp16")
    o.dtype = DType::F16;
  else if (dtype == "bf16")
    o.dtype = DType::BF16;
  else if (dtype == "fp32")
    o.dtype = DType::F32;
  else
    throw UsageError("export: --dtype must be fp16, bf16 or fp32 (got '" + dtype + "')");
  if (o.lora.empty() && !vm["lora-scale"].defaulted()) throw UsageError("export: --lora-scale needs --lora");
  if (format == "kohya-lora") {
    if (o.lora.empty()) throw UsageError("export: --format kohya-lora needs --lora FILE");
    if (!vm["lora-scale"].defaulted()) throw UsageError("export: --lora-scale applies to single-file only");
    const int n = write_kohya_lora(o.out, read_lora_weights(o.lora), o.dtype);
    std::printf("exported %d LoRA modules in the kohya format to %s\n", n, o.out.c_str());
    return 0;
  }
  if (o.model.empty()) throw UsageError("export: --model is required for --format single-file");
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
