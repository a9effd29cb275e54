#pragma once
// `dreambooth generate`: text-to-image sampling as diffusers' StableDiffusionPipeline does it, for the
// class (prior-preservation) images of step 3 and for trying the tuned model in step 5.
//
// Per image i of --num-images (global index, 0-based):
//   latents_i = init_noise_sigma * z_i, z_i ~ N(0,1) from PhiloxStream(seed, Sampler, step 0, sample i)
//               over the image's NHWC latent elements [h, w, C] in row-major order (or row i of
//               --init-latents), so any image can be remade alone, on any rank, in any batch;
//   text: prompt and negative prompt (default "") tokenized to 77 ids (truncated with a warning, as
//         diffusers) and encoded once: [uncond, cond] = text_encoder([negative, prompt]);
//   loop over the sampler's timesteps t:
//     guidance > 1 (diffusers: do_classifier_free_guidance = guidance_scale > 1):
//       m = scale_model_input(x, t); eps_u, eps_c = unet([m, m], t, [uncond, cond]) in ONE batch of 2B
//       (the B unconditional rows first, as diffusers' torch.cat([latents] * 2));
//       eps = eps_u + g * (eps_c - eps_u)
//     guidance <= 1: eps = unet(m, t, cond) (one half);
//     x = sampler.step(eps, t, x, noise)   noise for stochastic samplers: PhiloxStream(seed, Sampler,
//                                          step_index + 1, sample i), see diffusion/sampler.h
//   image = vae.decode(x / scaling_factor); u8 = rint(clamp(image * 0.5 + 0.5, 0, 1) * 255) (round half
//   to even in float32, as VaeImageProcessor.postprocess + numpy_to_pil).
//
// Ranks and batches: the images are cut into batches of --batch-size consecutive indices (batch k =
// images [k*bs, (k+1)*bs)), and batch k is made by rank k mod world size (with --batch-size 1, the
// default: image i by rank i mod N). Every draw is keyed by the global image index, AND a batch holds
// the same images whatever the rank count, so the files are byte-identical to a one-rank run with the
// same --batch-size. Across different batch sizes images agree to fp32 rounding only (latents ~1e-5,
// pixels identical or +-1 level): OpenBLAS's sgemm rounds a row differently depending on the number of
// rows M (it is thread-count invariant), so a UNet batch of 2 rows and one of 8 differ in the last bits.
// One more condition on the CPU backend: OpenBLAS splits large GEMM reductions by thread, so "byte-
// identical" holds for the same OpenBLAS/OpenMP thread count per process (tests/cli/generate_mpi.sh
// runs both with OMP_NUM_THREADS=1; mpirun's core binding can otherwise give a rank fewer threads than
// a lone process). Rank 0 writes manifest.jsonl after all ranks finished.
//
// Output folder: NNNNN.png (or .jpg), the 5-digit global image index, written atomically; an existing
// folder is fine and files of the same name are replaced. With skip_existing, images whose file is
// already there are not remade (resuming an interrupted run, or topping up class images: diffusers'
// train_dreambooth.py also only generates the missing ones); the manifest must then agree with the
// request (same model fingerprint and settings) for every file kept, else the run stops with an error.
//
// manifest.jsonl: one JSON object per image in index order: file, index, prompt, negative_prompt,
// seed, scheduler, steps, guidance, height, width, model (path as given), model_fingerprint,
// init_latents (the file, or null).
//
// Sizes: height and width default to unet.sample_size * vae_scale_factor (512 for SD 1.5, 768 for SD
// 2.1-v; 16 for the tiny test models) and must be multiples of 8 (diffusers' rule) AND of the VAE
// scale factor (so the latents have an integer size; 8 for every SD 1.x/2.x VAE, 2 for tiny ones).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/tensor.h"
#include "dreambooth/diffusion/sampler.h"
#include "dreambooth/models/config.h"
#include "dreambooth/text/clip_tokenizer.h"

namespace db {

class ModelFolder;
class Ops;
class ClipTextModel;
class UNet2DConditionModel;
class AutoencoderKL;

// The three networks and what the pipeline needs to know about a model, running on a backend (Ops).
// Inputs and outputs are host tensors, float32 (ids I32), NHWC: the sampler math stays on the host and
// each call copies its inputs to the backend and its output back (small next to a UNet evaluation).
class GenerateModels {
 public:
  struct Info {
    int latent_channels = 4;    // unet in_channels (= out_channels = vae latent_channels)
    int unet_sample_size = 64;  // latent side the UNet was trained at
    int vae_scale_factor = 8;   // 2^(levels - 1)
    float scaling_factor = 0.18215f;
    std::string fingerprint;  // model_fingerprint() of the folder ("" for synthetic models)
  };
  virtual ~GenerateModels() = default;
  virtual const Info& info() const = 0;
  virtual const ClipTokenizer& tokenizer() const = 0;
  virtual const SchedulerConfig& scheduler_config() const = 0;
  // ids I32 [B, T] -> last_hidden_state [B, T, D]
  virtual Tensor encode_text(const Tensor& ids) = 0;
  // sample [B, h, w, C], timesteps [B] (float), encoder_hidden_states [B, T, D] -> [B, h, w, C]
  virtual Tensor unet(const Tensor& sample, const Tensor& timesteps, const Tensor& encoder_hidden_states) = 0;
  // z [B, h, w, C] (unscaled latents) -> image [B, h*f, w*f, 3] in about [-1, 1]
  virtual Tensor vae_decode(const Tensor& z) = 0;
};

// Loads a diffusers model folder for generation on a backend: `device` as make_ops (backend/device.h).
// lora (optional): a LoRA weights file (pipelines/lora_file.h) merged into the weights at load, W +=
// lora_scale
// * B A (host f32, before the upload); the fingerprint then also covers the file and the scale.
std::unique_ptr<GenerateModels> load_generate_models(const std::string& model_dir,
                                                     const std::string& device = "auto",
                                                     const std::string& lora = "", float lora_scale = 1.f);

// Generation with networks that are already in memory (the trainer's validation images): the models
// are borrowed, not copied, and must outlive the returned object; their parameters are read at each
// call, so updates to the flat buffers they view are seen. The tokenizer and scheduler come from `mf`
// (only tokenizer/vocab.json + merges.txt are read; no weights). info().fingerprint is "".
// `ops` is the backend the networks' parameters live on (`second`, when given: the text encoder's and
// the VAE's, a GPU pair's second device). Computes exactly what load_generate_models(mf.dir()) computes
// on that backend for the same parameter values.
std::unique_ptr<GenerateModels> borrow_generate_models(Ops& ops, const ModelFolder& mf,
                                                       const ClipTextModel& text,
                                                       const UNet2DConditionModel& unet,
                                                       const AutoencoderKL& vae, Ops* second = nullptr);

// A cheap, stable identity of a model folder, recorded in manifest.jsonl: SHA-256 over model_index.json,
// every component's config.json / scheduler_config.json, the tokenizer's vocab.json + merges.txt, and
// for each *.safetensors file of unet/, text_encoder/, vae/ (sorted by path): its relative path, size,
// full header, and 256 evenly spaced 4 KiB blocks of the data section (all of it when smaller than
// 1 MiB). Reads ~3 MiB however large the model; any fine-tune changes it (every weight moves), while
// copying or moving the folder does not.
std::string model_fingerprint(const std::string& model_dir);

struct GenerateOptions {
  std::string model;            // model folder (for the manifest and load_generate_models)
  std::string device = "auto";  // backend for load_generate_models (backend/device.h make_ops)
  std::string lora;             // LoRA weights file merged at load ("" = none)
  float lora_scale = 1.f;       // multiplies the LoRA update
  std::string prompt;
  std::string negative_prompt;  // "" = diffusers' default unconditional prompt
  int num_images = 1;
  int steps = 50;
  float guidance = 7.5f;
  std::string scheduler;  // sampler name (diffusion/sampler.h); "" = the model's scheduler_config.json
  float eta = 0.f;        // DDIM only
  uint64_t seed = 0;
  int height = 0, width = 0;   // 0 = the model's default
  int batch_size = 1;          // images per UNet batch (x2 with guidance)
  std::string out_dir;         // "" = write nothing (tests)
  std::string format = "png";  // png | jpg
  int quality = 95;            // JPEG quality 1..100
  bool skip_existing = false;
  // Initial latents file: safetensors with a float tensor "latents" [N, C, h, w] in PyTorch's layout
  // (what torch.randn(...) / a diffusers pipeline uses; converted to NHWC here), N >= num_images; image
  // i uses row i, unscaled (multiplied by init_noise_sigma as diffusers does with latents=...).
  std::string init_latents;
  bool progress = true;  // progress lines on stderr
  // This rank makes every image and writes the manifest, with no collective call (no barrier): for a
  // caller that runs the pipeline on one rank while the others wait (the trainer's validation images).
  bool this_rank_only = false;

  // ---- test hooks ----
  // Unscaled initial latents NHWC [num_images, h, w, C] instead of Philox / the file.
  Tensor init_latents_tensor;
  // Noise for stochastic samplers for one batch (global image indices in batch order) instead of Philox.
  std::function<std::unique_ptr<NoiseSource>(const std::vector<uint32_t>& images)> noise_factory;
  bool keep_results = false;  // fill GenerateResult::latents / images
};

struct GeneratedImage {
  int index = 0;
  Tensor latents;            // final latents NHWC [h, w, C] (before / scaling_factor)
  std::vector<uint8_t> rgb;  // [H, W, 3]
};

struct GenerateResult {
  std::string scheduler;  // the sampler used
  int height = 0, width = 0;
  int made = 0, skipped = 0;  // on this rank
  int64_t unet_evals = 0;     // UNet batch rows evaluated on this rank (2 per image-step with guidance)
  double seconds = 0;         // wall time of this rank's sampling + decode + writes
  std::vector<GeneratedImage> images;  // keep_results: this rank's images, index order
};

// Checks the options that do not need the model (steps, counts, format, quality, scheduler name, sizes
// when given); throws UsageError with one line naming the option.
void validate_generate_options(const GenerateOptions& o);

// Runs the pipeline with given models (all ranks of the current world take part).
GenerateResult generate_images(GenerateModels& models, const GenerateOptions& o);
// Loads o.model then generate_images.
GenerateResult generate_images(const GenerateOptions& o);

// diffusers' postprocess of one decoded value: rint(clamp(x * 0.5 + 0.5, 0, 1) * 255) in float32.
uint8_t image_value_to_u8(float x);

}  // namespace db
