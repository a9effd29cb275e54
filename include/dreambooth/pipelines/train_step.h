#pragma once
// One DreamBooth optimisation step (DESIGN.md "DreamBooth step"; diffusers
// examples/dreambooth/train_dreambooth.py is the reference), split so that tests can inject the
// harness's latents / noise / timesteps and the trainer can accumulate several micro-batches:
//
//   TrainState st = TrainState::load(folder, /*train_text_encoder=*/true);
//   for each micro-batch:  forward_backward(ctx, st, schedule, mb, opt, 1.0 / accumulation)
//   apply_update(st, opt, step, ...)     // all-reduce, global norm, clip, AdamW, zero the grads
//
// Batch layout: the B instance samples first, then (prior preservation) the B class samples.
// loss = mse(pred_inst, target_inst) + prior_loss_weight * mse(pred_class, target_class), fp32 means.
//
// Min-SNR weighting (--snr-gamma). diffusers' script computes the weights from ALL 2B timesteps but
// applies them to the B instance losses only (after chunking off the prior half), so for B = 1 the
// instance loss is multiplied by the MEAN of the instance and class weights (the shapes broadcast), and
// for B > 1 the shapes do not match. We do what the script means: each instance sample's mse is weighted
// by min_snr_weights of its own timestep (noise_schedule.h, including the +1 of v-prediction), and the
// prior (class) loss stays unweighted, as in the script.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/tensor.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/nn/module.h"
#include "dreambooth/optim/adamw.h"
#include "dreambooth/optim/lr_schedule.h"

namespace db {

class ModelFolder;

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

// The trained models: parameters, gradients and AdamW moments, each one flat fp32 buffer per model laid
// out by the model's ParamRegistry (decision 2), with the models built as views over them.
struct TrainState {
  UNetConfig unet_cfg;
  ClipTextConfig te_cfg;
  ParamRegistry unet_reg, te_reg;
  Tensor unet_p, unet_g, unet_m, unet_v;
  Tensor te_p, te_g, te_m, te_v;  // te_g/m/v are allocated even when the encoder is frozen (zeros)
  int64_t adam_step = 0;          // optimizer updates applied so far (AdamW bias correction)

  std::unique_ptr<UNet2DConditionModel> unet, unet_grad;
  std::unique_ptr<ClipTextModel> te, te_grad;

  // Builds the models over the buffers (call after replacing a buffer object).
  void bind();
  // Parameters loaded from a model folder (unet/, text_encoder/); grads and moments zero.
  static TrainState load(const ModelFolder& folder);
  // From configs and already-filled parameter buffers (tests).
  static TrainState from(const UNetConfig& uc, const ParamRegistry& ureg, const Tensor& up,
                         const ClipTextConfig& tc, const ParamRegistry& treg, const Tensor& tp);
  void zero_grads();
};

// One micro-batch on this rank: S = B (no prior) or 2B samples, NHWC latents already scaled.
struct MicroBatch {
  Tensor latents;              // f32 [S, h, w, C]
  Tensor noise;                // f32 [S, h, w, C]
  std::vector<int> timesteps;  // S
  Tensor ids;                  // [S, T] I32 or I64
  int pairs = 0;               // B
  bool prior = false;          // S == 2B
};

struct LossParts {
  double loss = 0, instance = 0, prior = 0;  // prior 0 without prior preservation
};

// Forward and backward of one micro-batch: gradients are ADDED into st.*_g, scaled by `grad_scale`
// (1 / accumulation steps). Returns this rank's unscaled losses. A non-finite loss still runs backward
// (the gradients become non-finite and apply_update skips the step).
LossParts forward_backward(Ctx& ctx, TrainState& st, const NoiseSchedule& sched, const MicroBatch& mb,
                           const StepOptions& opt, float grad_scale = 1.f);

struct UpdateResult {
  double grad_norm = 0;  // global L2 norm over UNet + text encoder after averaging, before clipping
  float lr = 0;
  float clip_coef = 1;
  bool applied = false;  // false: a non-finite loss or gradient on some rank; parameters untouched
};

// Averages the gradients over the MPI world (allreduce_sum then 1/world), computes the global gradient
// norm over both models, clips, and runs AdamW with lr = opt.lr.lr_at(step) (step: 0-based training
// step). Skipped (parameters and moments untouched, adam_step unchanged) when `loss_finite` is false
// on any rank or the norm is not finite. Always zeroes the gradients.
UpdateResult apply_update(TrainState& st, const StepOptions& opt, int64_t step, bool loss_finite);

// ---- building latents ----
// latents = (mean + exp(0.5 * clamp(logvar, -30, 20)) * eps) * scaling_factor, as diffusers'
// DiagonalGaussianDistribution.sample() then * vae.config.scaling_factor. All [S, h, w, C].
Tensor latents_from_moments(const Tensor& mean, const Tensor& logvar, const Tensor& eps,
                            float scaling_factor);
// eps for latents_from_moments: sample b uses PhiloxStream(seed, LatentSample, step, slot[b]).normal(e).
Tensor draw_latent_eps(uint64_t seed, uint32_t step, const std::vector<int64_t>& slots, const Shape& shape);
// Splits VAE moments [S, h, w, 2C] (mean channels first, then logvar) into two [S, h, w, C] tensors.
void split_moments(const Tensor& moments, Tensor* mean, Tensor* logvar);

}  // namespace db
