// `dreambooth train`: DreamBooth fine-tuning (pipelines/train.h).
#include <cstdio>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/pipelines/train.h"

namespace db {
namespace {

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
      "stop with an error after this many non-finite steps in a row (each is skipped)");
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
      "resume from 'latest' (the newest checkpoint in OUT) or a checkpoint folder PATH")(
      "metrics", po::value(&o.metrics), "metrics file, one JSON line per step (default OUT/metrics.jsonl)")(
      "progress-seconds", po::value(&o.progress_seconds)->default_value(2.0, "2"),
      "progress line on stderr at most this often (0: every step)")(
      "device", po::value(&o.device)->default_value("auto"), kDeviceHelp);
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
          "every --checkpoint-every steps, and one JSON line of metrics per step.\n"
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
  o.offset_noise = vm.count("offset-noise") > 0;
  o.lora_text_encoder = vm.count("lora-text-encoder") > 0;
  if (o.lora_rank < 0) throw UsageError(str_cat("train: --lora-rank must be >= 0 (got ", o.lora_rank, ")"));
  if (o.lora_rank == 0 && (o.lora_text_encoder || !vm["lora-alpha"].defaulted()))
    throw UsageError("train: --lora-alpha and --lora-text-encoder need --lora-rank");
  if (o.lora_alpha < 0) throw UsageError("train: --lora-alpha must be >= 0");
  o.use_cached_latents = !vm.count("no-cached-latents");
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
  try {
    const TrainResult r = run_train(o);
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
