#pragma once
// One DreamBooth optimisation step (DESIGN.md "DreamBooth step"; diffusers
// examples/dreambooth/train_dreambooth.py is the reference), issued on a backend (Ops) so that the
// whole step stays in backend memory:
//
//   TrainState st = TrainState::load(ops, folder, train_text_encoder);
//   TrainStep step(ctx, st, schedule, opt, comm);
//   for each micro-batch:  step.micro_batch(mb, 1.0 / accumulation)   // forward + backward
//   step.update(step_index)             // all-reduce, global norm, clip + non-finite check, AdamW
//   StepResult r = step.finish()        // the step's one host synchronisation: losses, norm, applied
//
// Batch layout: the B instance samples first, then (prior preservation) the B class samples.
// loss = mse(pred_inst, target_inst) + prior_loss_weight * mse(pred_class, target_class), fp32 means.
// The MSE, its gradient, the gradient norm, the clip coefficient, the non-finite skip and AdamW are
// backend ops (ops.h); the noise, timestep draws, add_noise and the target are host math (the same
// values on every backend) done before the batch is uploaded.
//
// Min-SNR weighting (--snr-gamma). diffusers' script computes the weights from ALL 2B timesteps but
// applies them to the B instance losses only (after chunking off the prior half), so for B = 1 the
// instance loss is multiplied by the MEAN of the instance and class weights (the shapes broadcast), and
// for B > 1 the shapes do not match. We do what the script means: each instance sample's mse is weighted
// by min_snr_weights of its own timestep (noise_schedule.h, including the +1 of v-prediction), and the
// prior (class) loss stays unweighted, as in the script.
#include <cstdint>
#include <memory>
#include <vector>

#include "dreambooth/core/tensor.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/shard.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/nn/module.h"
#include "dreambooth/optim/adamw.h"
#include "dreambooth/optim/lr_schedule.h"

namespace db {

class ModelFolder;
class GradientReducer;

struct StepOptions {
  float prior_loss_weight = 1.0f;
  float snr_gamma = 0.f;  // 0: off
  bool train_text_encoder = true;
  // Recompute each UNet block's and text-encoder layer's activations during backward
  // (UNet2DConditionModel::Saved, ClipTextModel::Saved): less activation memory, one more forward of
  // the blocks; the gradients are bit-identical.
  bool gradient_checkpointing = false;
  float max_grad_norm = 1.0f;  // <= 0: no clipping (the norm is still computed and reported)
  AdamWConfig adam;
  LrSchedule lr;
};

// One model's parameter buffers (DESIGN.md decision 2), each flat over the model's ParamRegistry, in
// backend memory: f32 master weights; the working copy the model computes with (activation dtype: the
// master itself on the CPU, a bf16 copy on a GPU); and, for a trained model, f32 gradients and AdamW
// moments (undefined for a frozen one: no memory spent on them).
//
// Sharded optimizer (--shard-optimizer, ZeRO-1; create() with a layout): this rank owns [own_begin, own_end)
// of the flat buffers; m and v hold that range only and AdamW updates that range. When the working copy
// is separate (bf16 on a GPU or the emulated GPU), the f32 master holds that range only too
// (master_sharded): AdamW writes the owned range of the working copy and the working copy is
// all-gathered. When the master IS the working copy (f32: the CPU), it stays whole: every rank computes
// with all of it, so its updated range is all-gathered instead. Checkpoints and outputs read the whole
// master through full_master_host. grad stays full size (backward accumulates into all of it) but after
// the reduce-scatter only the owned range holds the averaged gradient.
struct ModelBuffers {
  ParamRegistry reg;
  Tensor master, working;  // master: F32 [own_end - own_begin] when master_sharded
  Tensor grad, m, v;       // m, v: F32 [own_end - own_begin]
  ShardLayout shard;       // ranks() == 0: not sharded
  int64_t own_begin = 0, own_end = 0;
  bool master_sharded = false;
  bool trained() const { return grad.defined(); }
  bool sharded() const { return shard.ranks() > 0; }
  // Keeps m and v (and the master, when the working copy is separate) for `rank`'s range of `layout`
  // only (moments zeroed; call before loading a checkpoint).
  void shard_optimizer(Ops& ops, const ShardLayout& layout, int rank);
  // Bytes per rank that sharding saves: m and v (8 B per parameter) outside the owned range, and the
  // f32 master (4 B more) when master_sharded.
  int64_t sharding_saves_bytes() const {
    return (reg.total_numel() - (own_end - own_begin)) * (master_sharded ? 12 : 8);
  }
  // A buffer of this rank's range (m, v, or a sharded master) as the whole model's, in host memory: on
  // a sharded rank the ranks' parts are all-gathered (a collective: every rank calls it, in the same
  // order).
  Tensor full_moment_host(Ops& ops, Communicator* comm, const Tensor& part) const;
  // The whole f32 master in host memory (all-gathered when master_sharded: then a collective).
  Tensor full_master_host(Ops& ops, Communicator* comm) const;
  // The master (its owned range when master_sharded) and the working copy from the whole model's host
  // f32 parameters (a checkpoint); waits for the backend.
  void load_master(Ops& ops, const Tensor& host);
  // From host f32 parameters laid out by `reg`; gradients and moments zeroed when `trained`. On the CPU
  // the master shares `host_params`' storage.
  static ModelBuffers create(Ops& ops, ParamRegistry reg, const Tensor& host_params, bool trained,
                             const ShardLayout* layout = nullptr, int rank = 0);
  // working = master in the working dtype (after the master changed outside AdamW; not master_sharded).
  void refresh_working(Ops& ops);
};

// LoRA DreamBooth (nn/lora.h): adapters of `rank` on the UNet's attention projections (and the text
// encoder's with `text_encoder`), scale alpha / rank (alpha 0: alpha = rank, as diffusers' script).
struct LoraOptions {
  int rank = 0;  // 0: off (full fine-tuning)
  float alpha = 0.f;
  bool text_encoder = false;
  float scale() const { return (alpha > 0 ? alpha : float(rank)) / float(rank); }
};

// The trained models: their buffers, and the models built as views over them.
struct TrainState {
  UNetConfig unet_cfg;
  ClipTextConfig te_cfg;
  ModelBuffers unet_buf, te_buf;  // te_buf has no gradients or moments when the encoder is frozen
  // LoRA: the adapters' buffers (te_lora empty without text-encoder adapters); unet_buf and te_buf are
  // then frozen (no gradients or moments) and the optimizer sees these only.
  ModelBuffers unet_lora, te_lora;
  LoraOptions lora;
  int64_t adam_step = 0;  // optimizer updates applied so far (AdamW bias correction)
  // --gpus-per-rank 2: the text encoder's buffers (te_buf, te_lora: weights, gradients, moments) live on
  // this second backend, the UNet's on the trainer's; null: everything on the trainer's backend.
  Ops* te_ops = nullptr;
  // The backend holding `b` (one of this state's buffers), given the trainer's.
  Ops& ops_for(const ModelBuffers& b, Ops& ops) const {
    return te_ops && (&b == &te_buf || &b == &te_lora) ? *te_ops : ops;
  }

  std::unique_ptr<UNet2DConditionModel> unet, unet_grad;
  std::unique_ptr<ClipTextModel> te, te_grad;  // te_grad null when frozen

  // Builds the models over the buffers (call after replacing a buffer object).
  void bind();
  // Switches to LoRA training: frees the base models' gradients and moments, and adds adapters
  // initialised as PEFT does (init_lora_params, streams 0 = UNet, 1 = text encoder, under `seed`).
  void enable_lora(Ops& ops, const LoraOptions& lo, uint64_t seed);
  bool lora_enabled() const { return lora.rank > 0; }
  bool te_trained() const { return te_buf.trained() || te_lora.trained(); }
  // The optimised buffers, in backward order of the models (UNet first): the base models' when fully
  // fine-tuned, the adapters' under LoRA.
  std::vector<ModelBuffers*> trained_buffers();
  // Parameters loaded from a model folder (unet/, text_encoder/); gradients and moments zero.
  // train_unet false: no UNet gradient or moment buffers either (LoRA: enable_lora next).
  // te_ops: where the text encoder goes (null: `ops`).
  // shard_ranks > 1: ZeRO-1 over that many ranks from the start (this is `shard_rank`): the trained
  // models' moments (and sharded masters) are allocated at the owned range's size, never whole.
  static TrainState load(Ops& ops, const ModelFolder& folder, bool train_text_encoder, bool train_unet = true,
                         Ops* te_ops = nullptr, int shard_rank = 0, int shard_ranks = 1);
  // From configs and host parameter buffers (tests).
  static TrainState from(Ops& ops, const UNetConfig& uc, const ParamRegistry& ureg, const Tensor& up,
                         const ClipTextConfig& tc, const ParamRegistry& treg, const Tensor& tp,
                         bool train_text_encoder, bool train_unet = true, Ops* te_ops = nullptr,
                         int shard_rank = 0, int shard_ranks = 1);
  void zero_grads(Ops& ops);
  // The optimizer-state bytes ZeRO-1 saves on this rank (0 unsharded).
  int64_t sharding_saves_bytes() const;
};

// One micro-batch on this rank, host memory: S = B (no prior) or 2B samples.
struct MicroBatch {
  Tensor latents;              // f32 [S, h, w, C], already scaled
  Tensor noise;                // f32 [S, h, w, C]
  std::vector<int> timesteps;  // S
  Tensor ids;                  // [S, T] I32 or I64
  int pairs = 0;               // B
  bool prior = false;          // S == 2B
  // The model input and regression target (f32 [S, h, w, C]); filled by prepare_targets.
  Tensor noisy, target;
};
// noisy = add_noise(latents, noise, t) and the target (eps or v), host math; no-op when already filled.
void prepare_targets(const NoiseSchedule& sched, MicroBatch& mb);

struct LossParts {
  double loss = 0, instance = 0, prior = 0;  // prior 0 without prior preservation
};
// The micro-batch's losses from its per-sample mean squared errors (host, after the step's sync).
LossParts combine_losses(const float* sample_mse, const MicroBatch& mb, const NoiseSchedule& sched,
                         const StepOptions& opt);

struct UpdateResult {
  double grad_norm = 0;  // global L2 norm over UNet + text encoder after averaging, before clipping
  float lr = 0;
  float clip_coef = 1;
  bool applied = false;  // false: a non-finite loss or gradient on some rank; parameters untouched
};

struct StepResult {
  LossParts loss;  // this rank's, averaged over the micro-batches
  UpdateResult update;
};

// One optimizer step. micro_batch() and update() only issue work on the backend; finish() waits for it
// (the one host synchronisation of the step) and reads back the scalars.
class TrainStep {
 public:
  // comm: null or size 1 for a single rank. Gradients are reduced block by block as backward finishes
  // them (Ctx::grads_ready) during the last micro-batch, in buckets of at least bucket_bytes. te_comm: a
  // GPU pair's second communicator (over st.te_ops, the ranks' second devices) for the text encoder's.
  TrainStep(Ctx& ctx, TrainState& st, const NoiseSchedule& sched, const StepOptions& opt,
            Communicator* comm = nullptr, size_t bucket_bytes = size_t(25) << 20,
            Communicator* te_comm = nullptr);
  ~TrainStep();
  // Forward and backward of one micro-batch: gradients are ADDED, scaled by `grad_scale` (1 /
  // accumulation steps). `last`: the step's final micro-batch (its backward starts the reductions). A
  // non-finite loss still runs backward (the gradients become non-finite and the update is skipped).
  void micro_batch(MicroBatch mb, float grad_scale = 1.f, bool last = true);
  // Averages the gradients over the ranks (reduce-scatters them for a sharded optimizer), computes the
  // global gradient norm over both models (sharded: the owned ranges' sums of squares, all-reduced),
  // clips, and runs AdamW (sharded: on the owned range, then the working copy all-gathered, or the
  // master when it is the working copy) with lr = opt.lr.lr_at(step) (step: 0-based training step).
  // Skipped (parameters and moments untouched) when a loss on any rank or the norm is not finite.
  // Zeroes the gradients.
  void update(int64_t step);
  // Waits for the backend; adam_step advances when the update was applied.
  StepResult finish();
  // This rank's losses of the micro-batches so far, averaged (waits for the backend; no update needed:
  // tests read gradients between micro-batches and update).
  LossParts losses();

 private:
  Ctx& ctx_;
  TrainState& st_;
  const NoiseSchedule& sched_;
  const StepOptions opt_;  // a copy: callers pass temporaries
  Communicator* comm_;
  Communicator* te_comm_;                                  // a GPU pair's text-encoder lane (else comm_)
  std::unique_ptr<GradientReducer> reducer_, te_reducer_;  // te_reducer_: a GPU pair's, else null
  GradientReducer* reducer_for(const std::string& model) const;
  Communicator* comm_for(const ModelBuffers& b) const;
  std::vector<MicroBatch> mbs_;  // host side, for combine_losses
  std::vector<Tensor> mse_;      // per micro-batch: F32 [S] in backend memory
  Tensor sumsq_, coef_, check_;  // F64 [2], F32 [2], F32 [sum of S]
  float lr_ = 0;
  bool updated_ = false;
};

// ---- building latents (host) ----
// latents = (mean + exp(0.5 * clamp(logvar, -30, 20)) * eps) * scaling_factor, as diffusers'
// DiagonalGaussianDistribution.sample() then * vae.config.scaling_factor. All [S, h, w, C].
Tensor latents_from_moments(const Tensor& mean, const Tensor& logvar, const Tensor& eps,
                            float scaling_factor);
// eps for latents_from_moments: sample b uses PhiloxStream(seed, LatentSample, step, slot[b]).normal(e).
Tensor draw_latent_eps(uint64_t seed, uint32_t step, const std::vector<int64_t>& slots, const Shape& shape);
// Splits VAE moments [S, h, w, 2C] (mean channels first, then logvar) into two [S, h, w, C] tensors.
void split_moments(const Tensor& moments, Tensor* mean, Tensor* logvar);

}  // namespace db
