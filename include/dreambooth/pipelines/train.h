#pragma once
// `dreambooth train`: DreamBooth fine-tuning of the UNet and text encoder (DESIGN.md "DreamBooth step"),
// data-parallel over the MPI world.
//
// Per step, on every rank: accumulation x { loader.next() -> latents (cached moments + Philox
// LatentSample eps, or the VAE encoder on pixels) -> Philox noise and timesteps keyed by (seed, global
// batch, GLOBAL slot) -> forward/backward } -> all-reduce-average the gradients -> global norm -> clip ->
// AdamW -> LR schedule. Every draw depends only on the seed, the global batch counter and the sample's
// global slot, so N ranks x B pairs compute what 1 rank x N*B pairs computes (up to the all-reduce's
// summation order), and a resumed run draws exactly what the uninterrupted one drew.
//
// Output (rank 0 only): OUT/ becomes a diffusers StableDiffusionPipeline folder (model_index.json,
// unet/, text_encoder/, vae/ (the base VAE, re-saved unchanged), tokenizer/, scheduler/, ...). Each
// component is written to a temporary folder and renamed into place; model_index.json is written last
// and removed when a run starts, so OUT is a loadable pipeline exactly when model_index.json exists.
//
// Checkpoints: OUT/checkpoint-STEP/ (io/checkpoint_dir.h, atomic), STEP = training steps completed:
//   unet/, text_encoder/        diffusers layout, fp32 (exact; `compare` and diffusers read them)
//   optimizer.safetensors       unet.m, unet.v, text_encoder.m, text_encoder.v (flat, registry layout)
//   state.json                  written last: version, step, data cursor (epoch, position), seed,
//                               adam_step, lr schedule, world size, batch size, accumulation, ...
// A resumed run (--resume latest|auto|PATH) restores weights, moments, step and cursor and is
// bit-identical to an uninterrupted run with the same options (and the same global batch B x world).
// state.json also records the model's and the data's fingerprints (model_fingerprint, data_fingerprint)
// and the key options (key_options in train.cpp); a resume whose model, data or options differ stops,
// naming every difference. "auto" is "latest" when OUT has a checkpoint, else a fresh start (a requeued
// job needs no edit). A fresh run (no --resume) into an OUT that holds checkpoints is refused (exit 2) unless
// --overwrite (which removes them).
//
// OUT (io/out_lock.h): locked for the run (OUT/.dreambooth.lock, rank 0; a second run exits 2 naming
// the holder); it may not be, contain or lie inside --model (exit 2), so the base is never written.
//
// Signals (core/stop_signal.h): SIGTERM or SIGUSR1 on any rank sets a flag; at the end of the step in
// flight the ranks agree on it (one all-reduce per step), write OUT/checkpoint-STEP and return with
// TrainResult::stopped (the CLI exits kExitStopped = 3). A signal during the last step lets the run
// finish normally (exit 0). Collectives are bounded by --collective-timeout (dist/world.h).
//
// LoRA (--lora-rank R): OUT/pytorch_lora_weights.safetensors (pipelines/lora_file.h, --save-dtype) is
// the output, loadable by StableDiffusionPipeline.load_lora_weights(OUT) and `generate --lora`; a
// checkpoint holds lora.safetensors (the adapters' f32 masters and AdamW moments, flat) and that same
// weights file, no copy of the frozen base. Resume needs the same rank, alpha and targets.
//
// Validation images (--validation-prompt P --validation-every N): after every N-th optimizer step and
// after the last one, rank 0 runs the generate pipeline (pipelines/generate.h) on the CURRENT in-memory
// UNet and text encoder and the frozen base VAE, with the model's default scheduler, guidance 7.5,
// --validation-steps sampling steps and --validation-images images, seed validation_seed(--seed), and
// writes OUT/validation/step-STEP/ (NNNNN.png + manifest.jsonl; the folder is built under a temporary
// name and renamed, so it appears complete or not at all). The other ranks wait at a barrier. The
// draws are generate's Sampler-purpose streams keyed by image index under the derived seed; training
// draws none of them and reads no state validation touches, so training is bit-identical with and
// without validation. The images of the last step equal (byte for byte, fp32 --save-dtype, same thread
// count) what
//   dreambooth generate --model OUT --prompt P --num-images K --steps S --seed validation_seed(SEED)
// makes from the saved pipeline; manifest.jsonl records that seed.
#include <cstdint>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"

namespace db {

struct TrainOptions {
  std::string model;                    // diffusers folder
  std::vector<std::string> instance;    // shard specs (file, glob, folder)
  std::vector<std::string> class_data;  // empty: no prior preservation
  std::string out;
  int batch_size = 1;  // pairs per rank per micro-batch
  uint64_t seed = 0;
  int64_t max_steps = 0;  // 0: from epochs (or 800 when neither is given)
  int64_t epochs = 0;
  float prior_loss_weight = 1.0f;
  std::string save_dtype = "fp32";
  int64_t checkpoint_every = 500;  // 0: none
  int keep_checkpoints = 0;        // 0: keep all
  std::string resume;              // "" | "latest" | "auto" (latest, or a fresh start when none) | PATH
  bool overwrite = false;          // a fresh run may remove an earlier run's checkpoints in OUT
  std::string metrics;             // "" -> OUT/metrics.jsonl
  std::string device = "auto";
  // 2: the UNet on GPU 2 * local_rank, the text encoder (and the VAE encoder) on GPU 2 * local_rank + 1
  // (the Ray example's workers); CUDA only; one rank per pair (mpirun -np N: N pairs).
  int gpus_per_rank = 1;
  float lr = 5e-6f;
  double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_epsilon = 1e-8, weight_decay = 1e-2;
  std::string lr_scheduler = "constant";
  int64_t lr_warmup_steps = 0;
  float max_grad_norm = 1.0f;
  float snr_gamma = 0.f;
  bool offset_noise = false;
  bool train_text_encoder = true;
  bool gradient_checkpointing = false;  // StepOptions::gradient_checkpointing
  // LoRA DreamBooth (TrainState::enable_lora): rank 0 = full fine-tuning. With a rank, the base models are
  // frozen, train_text_encoder is ignored (lora_text_encoder adds text-encoder adapters), checkpoints hold
  // the adapters and their moments, and OUT gets pytorch_lora_weights.safetensors (pipelines/lora_file.h)
  // instead of a pipeline.
  int lora_rank = 0;
  float lora_alpha = 0.f;  // 0: = rank
  bool lora_text_encoder = false;
  int gradient_accumulation_steps = 1;
  bool shard_optimizer = false;  // ZeRO-1 over the ranks (ModelBuffers::shard_optimizer)
  double bucket_mb = 25;         // gradient reduction bucket (GradientReducer), MiB
  int max_nonfinite_steps = 5;
  double progress_seconds = 2.0;   // progress line at most this often (0: every step)
  bool use_cached_latents = true;  // false: always VAE-encode the pixels
  std::string validation_prompt;   // "": no validation images
  int64_t validation_every = 0;    // >= 1 when validation_prompt is set
  int validation_images = 2;
  int validation_steps = 25;
  double collective_timeout = 600;  // seconds any one MPI collective may wait (dist/world.h); 0: none
  // Test hook (also DREAMBOOTH_FAIL_RANK / DREAMBOOTH_FAIL_STEP): throw on this rank at this step.
  int fail_rank = -1;
  int64_t fail_step = -1;
  // Test hook: return after this many steps (checkpoints written as usual, no final output), as if the
  // job had been killed there. 0: off.
  int64_t stop_after = 0;
};

struct TrainResult {
  int64_t start_step = 0, end_step = 0;  // steps done before this run (resume) and after it
  int64_t skipped_steps = 0;             // non-finite steps skipped in this run
  double last_loss = 0;
  std::string output;      // the pipeline folder (OUT)
  bool stopped = false;    // a SIGTERM / SIGUSR1 stopped the run early (core/stop_signal.h)
  std::string checkpoint;  // when stopped: the checkpoint written at end_step
};

// A failure all ranks agreed on (e.g. too many non-finite steps): thrown on every rank; only the rank
// with report_here prints it, and no rank needs MPI_Abort.
class AgreedError : public Error {
 public:
  AgreedError(const std::string& msg, bool report_here) : Error(msg), report_here(report_here) {}
  bool report_here;
};

TrainResult run_train(const TrainOptions& opt);

// The seed of the validation images: SplitMix64 of (seed XOR "validati"), low 53 bits (so manifest.jsonl's
// number reads back exactly in jq / JavaScript), a fixed function of --seed (the same for every
// validation step, so successive steps start from the same noise).
uint64_t validation_seed(uint64_t seed);

}  // namespace db
