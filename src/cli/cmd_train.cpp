// `dreambooth train`: DreamBooth fine-tuning (pipelines/train.h).
#include <cstdio>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/stop_signal.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/pipelines/train.h"
#include "option_checks.h"

namespace db {
namespace {

// Values the pipeline would take silently (NaN compares false: clipping or min-SNR weighting off) or
// reject only after loading the model.
void check_train_values(const TrainOptions& o) {
  const char* c = "train";
  check_range(c, "lr", o.lr, above(0));
  check_range(c, "adam-beta1", o.adam_beta1, Range{0, 1, false, true});
  check_range(c, "adam-beta2", o.adam_beta2, Range{0, 1, false, true});
  check_range(c, "adam-epsilon", o.adam_epsilon, above(0));
  check_range(c, "weight-decay", o.weight_decay, at_least(0));
  check_range(c, "max-grad-norm", o.max_grad_norm, at_least(0));
  check_range(c, "snr-gamma", o.snr_gamma, at_least(0));
  check_range(c, "prior-loss-weight", o.prior_loss_weight, at_least(0));
  check_range(c, "progress-seconds", o.progress_seconds, at_least(0));
  check_range(c, "bucket-mb", o.bucket_mb, at_least(0));  // 0: no overlap
  if (o.lr_warmup_steps < 0) throw UsageError("train: --lr-warmup-steps must be >= 0");
  if (o.max_nonfinite_steps < 1) throw UsageError("train: --max-nonfinite-steps must be >= 1");
  check_choice(c, "lr-scheduler", o.lr_scheduler, {"constant", "constant_with_warmup", "linear", "cosine"});
  check_choice(c, "save-dtype", o.save_dtype,
               {"fp32", "fp16", "bf16", "f32", "f16", "float32", "float16", "bfloat16"});
  check_device(c, o.device);
  check_utf8(c, "validation-prompt", o.validation_prompt);
}

int run_train_cmd(int argc, char** argv) {
  TrainOptions o;
  std::string seed = "0";
  po::options_description data("model and data");
  data.add_options()("model", po::value(&o.model)->required(),
                     "base model: a diffusers folder (model_index.json, unet/, text_encoder/, vae/, "
                     "scheduler/, tokenizer/)")(
      "instance-data", po::value(&o.instance)->multitoken()->required(),
      "instance shards from 'dreambooth prepare': files, globs or folders of *.h5 (repeatable)")(
      "class-data", po::value(&o.class_data)->multitoken(),
      "class (prior-preservation) shards, same forms; without it prior preservation is off")(
      "out", po::value(&o.out)->required(),
      "output folder: the tuned pipeline (diffusers layout), checkpoint-STEP/ folders and metrics.jsonl")(
      "no-cached-latents",
      "VAE-encode the pixels every step even when the shards hold cached latent moments");
  po::options_description train("training");
  train.add_options()("batch-size", po::value(&o.batch_size)->default_value(1),
                      "pairs (instance + class image) per rank per step")(
      "seed", po::value(&seed)->default_value("0"),
      "seed of every random draw (data order, noise, timesteps, latent samples)")(
      "max-steps", po::value(&o.max_steps)->default_value(0),
      "optimizer steps to train (0: from --epochs, or 800 when neither is given)")(
      "epochs", po::value(&o.epochs)->default_value(0),
      "epochs to train when --max-steps is 0 (an epoch = max(instance, class) pairs)")(
      "gradient-accumulation-steps", po::value(&o.gradient_accumulation_steps)->default_value(1),
      "micro-batches per optimizer step")("prior-loss-weight",
                                          po::value(&o.prior_loss_weight)->default_value(1.0f, "1.0"),
                                          "weight of the class (prior) loss")(
      "no-train-text-encoder", "freeze the text encoder (train the UNet only)")(
      "gradient-checkpointing",
      "recompute each UNet block's (and text-encoder layer's) activations during backward: less "
      "memory, one more forward of the blocks (~30-45% more compute), identical gradients")(
      "snr-gamma", po::value(&o.snr_gamma)->default_value(0.f, "0 (off)"),
      "min-SNR-gamma loss weighting of the instance samples (5.0 is the paper's value)")(
      "offset-noise", "add 0.1 x per-channel offset noise (train_dreambooth.py --offset_noise)")(
      "max-grad-norm", po::value(&o.max_grad_norm)->default_value(1.0f, "1.0"),
      "clip the global gradient norm (UNet + text encoder) to this (0: no clipping)")(
      "max-nonfinite-steps", po::value(&o.max_nonfinite_steps)->default_value(5),
      "stop with an error after this many non-finite steps in a row (each is skipped)")(
      "shard-optimizer",
      "ZeRO-1 under mpirun: each rank keeps AdamW moments (and, with bf16 working weights, the f32 master "
      "weights) for 1/N of the weights, gradients reduce-scattered, updated weights all-gathered (same "
      "result as unsharded; checkpoints are full)")(
      "bucket-mb", po::value(&o.bucket_mb)->default_value(25.0, "25"),
      "gradient reduction bucket size in MiB (over NCCL the reduction of finished blocks overlaps the "
      "rest of backward; 25 is PyTorch DDP's default, not yet measured here on GPUs; 0: no overlap, "
      "everything "
      "reduced after backward)");
  po::options_description lora("LoRA (train adapters instead of the whole model)");
  lora.add_options()("lora-rank", po::value(&o.lora_rank)->default_value(0, "0 (off)"),
                     "train rank-R LoRA adapters on the UNet attention projections (to_q, to_k, to_v, "
                     "to_out.0) with the base model frozen; writes OUT/pytorch_lora_weights.safetensors "
                     "(diffusers load_lora_weights, generate --lora) instead of a pipeline")(
      "lora-alpha", po::value(&o.lora_alpha)->default_value(0.f, "rank"),
      "LoRA alpha: the adapters are scaled by alpha / rank")(
      "lora-text-encoder",
      "also adapt the text encoder's q_proj, k_proj, v_proj, out_proj (with --lora-rank)");
  po::options_description optim("optimizer");
  optim.add_options()("lr", po::value(&o.lr)->default_value(5e-6f, "5e-6"), "learning rate")(
      "adam-beta1", po::value(&o.adam_beta1)->default_value(0.9, "0.9"), "AdamW beta1")(
      "adam-beta2", po::value(&o.adam_beta2)->default_value(0.999, "0.999"), "AdamW beta2")(
      "adam-epsilon", po::value(&o.adam_epsilon)->default_value(1e-8, "1e-8"), "AdamW epsilon")(
      "weight-decay", po::value(&o.weight_decay)->default_value(1e-2, "1e-2"),
      "AdamW decoupled weight decay")("lr-scheduler", po::value(&o.lr_scheduler)->default_value("constant"),
                                      "constant | constant_with_warmup | linear | cosine")(
      "lr-warmup-steps", po::value(&o.lr_warmup_steps)->default_value(0),
      "linear warmup steps of the schedule");
  po::options_description io("checkpoints, output and logging");
  io.add_options()("save-dtype", po::value(&o.save_dtype)->default_value("fp32"),
                   "dtype of the saved pipeline's weights: fp32 | fp16 | bf16 (checkpoints are always fp32)")(
      "checkpoint-every", po::value(&o.checkpoint_every)->default_value(500),
      "write OUT/checkpoint-STEP every N steps (0: never)")(
      "keep-checkpoints", po::value(&o.keep_checkpoints)->default_value(0),
      "keep only the newest K checkpoints (0: keep all)")(
      "resume", po::value(&o.resume),
      "resume from 'latest' (the newest checkpoint in OUT), 'auto' (latest if OUT has a checkpoint, else a "
      "fresh start: for job scripts that may be requeued) or a checkpoint folder PATH")(
      "overwrite",
      "start afresh in an --out that holds checkpoints of an earlier run, removing them (without it such "
      "an --out is refused, so that a forgotten --resume loses nothing)")(
      "metrics", po::value(&o.metrics), "metrics file, one JSON line per step (default OUT/metrics.jsonl)")(
      "progress-seconds", po::value(&o.progress_seconds)->default_value(2.0, "2"),
      "progress line on stderr at most this often (0: every step)")(
      "device", po::value(&o.device)->default_value("auto"), kDeviceHelp)(
      "gpus-per-rank", po::value(&o.gpus_per_rank)->default_value(1),
      "1, or 2: the UNet on GPU 2r of local rank r, the text encoder and the VAE on GPU 2r+1, hidden "
      "states and their gradient copied between them (CUDA; start one rank per pair)")(
      "collective-timeout", po::value(&o.collective_timeout)->default_value(600, "600"),
      "end the job when one MPI collective waits longer than this many seconds (a stopped or hung rank; "
      "the message names the ranks that did not arrive). Rank 0's checkpoint writes and validation images "
      "count as waits for the others: raise it when those take longer. 0: wait forever");
  po::options_description val("validation images (rank 0, with the weights being trained)");
  val.add_options()(
      "validation-prompt", po::value(&o.validation_prompt),
      "make images of this prompt every --validation-every steps and after the last step, "
      "into OUT/validation/step-STEP/ (NNNNN.png + manifest.jsonl); training is unchanged by it")(
      "validation-every", po::value(&o.validation_every)->default_value(0),
      "steps between validations (>= 1; required with --validation-prompt)")(
      "validation-images", po::value(&o.validation_images)->default_value(2), "images per validation")(
      "validation-steps", po::value(&o.validation_steps)->default_value(25),
      "sampling steps per image (the model's scheduler, guidance 7.5). The last step's images equal, "
      "byte for byte with fp32 --save-dtype, those of: dreambooth generate --model OUT --prompt P "
      "--num-images K --steps S --seed VSEED, where VSEED = the 'seed' in the folder's manifest.jsonl "
      "(low 53 bits of SplitMix64(--seed XOR 0x76616c6964617469), the same for every step)");
  po::options_description all("options");
  all.add(data).add(train).add(lora).add(optim).add(io).add(val);
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv,
          "dreambooth train --model DIR --instance-data SHARDS [--class-data SHARDS] --out DIR [options]",
          "Fine-tunes the UNet and the text encoder of a Stable Diffusion model on subject photos\n"
          "(DreamBooth, with the prior-preservation loss when --class-data is given), data-parallel\n"
          "under mpirun/srun: each rank takes --batch-size pairs of every global batch and gradients are\n"
          "averaged. Writes a diffusers pipeline folder to --out (model_index.json last), checkpoints\n"
          "every --checkpoint-every steps, and one JSON line of metrics per step. SIGTERM or SIGUSR1\n"
          "(e.g. Slurm's --signal=USR1@120) finishes the step, writes a checkpoint and exits 3;\n"
          "--resume auto continues it.\n"
          "Example: mpirun -np 2 dreambooth train --model sd15 --instance-data data/dog.h5 \\\n"
          "           --class-data data/class --out tuned --max-steps 800 --lr 5e-6",
          all, vm))
    return 0;
  try {
    o.seed = std::stoull(seed);
  } catch (...) {
    throw UsageError("train: --seed must be a non-negative integer (got '" + seed + "')");
  }
  o.train_text_encoder = !vm.count("no-train-text-encoder");
  o.gradient_checkpointing = vm.count("gradient-checkpointing") > 0;
  o.shard_optimizer = vm.count("shard-optimizer") > 0;
  if (o.gpus_per_rank != 1 && o.gpus_per_rank != 2)
    throw UsageError(str_cat("train: --gpus-per-rank must be 1 or 2 (got ", o.gpus_per_rank, ")"));
  if (o.gpus_per_rank == 2 && o.device == "cpu")
    throw UsageError("train: --gpus-per-rank 2 places the models on two GPUs: not with --device cpu");
  o.offset_noise = vm.count("offset-noise") > 0;
  o.lora_text_encoder = vm.count("lora-text-encoder") > 0;
  if (o.lora_rank < 0) throw UsageError(str_cat("train: --lora-rank must be >= 0 (got ", o.lora_rank, ")"));
  if (o.lora_rank == 0 && (o.lora_text_encoder || !vm["lora-alpha"].defaulted()))
    throw UsageError("train: --lora-alpha and --lora-text-encoder need --lora-rank");
  if (o.lora_alpha < 0) throw UsageError("train: --lora-alpha must be >= 0");
  o.use_cached_latents = !vm.count("no-cached-latents");
  o.overwrite = vm.count("overwrite") > 0;
  if (o.overwrite && !o.resume.empty())
    throw UsageError("train: --overwrite and --resume exclude each other");
  if (o.batch_size < 1)
    throw UsageError(str_cat("train: --batch-size must be >= 1 (got ", o.batch_size, ")"));
  if (o.gradient_accumulation_steps < 1)
    throw UsageError("train: --gradient-accumulation-steps must be >= 1");
  if (o.max_steps < 0 || o.epochs < 0) throw UsageError("train: --max-steps and --epochs must be >= 0");
  if (o.checkpoint_every < 0 || o.keep_checkpoints < 0)
    throw UsageError("train: --checkpoint-every and --keep-checkpoints must be >= 0");
  if (!o.validation_prompt.empty() && o.validation_every < 1)
    throw UsageError(str_cat("train: --validation-every must be >= 1 with --validation-prompt (got ",
                             o.validation_every, ")"));
  if (o.validation_prompt.empty() && vm.count("validation-every") && !vm["validation-every"].defaulted())
    throw UsageError("train: --validation-every needs --validation-prompt");
  if (o.validation_images < 1 || o.validation_steps < 1)
    throw UsageError("train: --validation-images and --validation-steps must be >= 1");
  check_train_values(o);
  try {
    const TrainResult r = run_train(o);
    if (r.stopped) {
      if (world().is_root())
        std::printf("stopped by a signal after step %lld; checkpoint %s (resume with --resume auto)\n",
                    (long long)r.end_step, r.checkpoint.c_str());
      return kExitStopped;
    }
    if (world().is_root())
      std::printf("trained steps %lld -> %lld (%lld skipped), last loss %.6f; %s in %s\n",
                  (long long)r.start_step, (long long)r.end_step, (long long)r.skipped_steps, r.last_loss,
                  o.lora_rank > 0 ? "LoRA weights" : "pipeline", r.output.c_str());
  } catch (const AgreedError& e) {  // every rank stops together: one message, no abort
    if (e.report_here) log_message(LogLevel::Error, e.what());
    return 1;
  }
  return 0;
}

}  // namespace

DB_COMMAND(train, "train", "fine-tune a model on subject photos (DreamBooth), data-parallel under MPI",
           run_train_cmd);

}  // namespace db
