#pragma once
// The reference harness's DreamBooth batch and optimizer settings (tests/reference/make_golden.py:
// train.safetensors of a golden preset): one instance + one class sample with the harness's latents,
// noise, timesteps and prompt ids; AdamW lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 1e-2,
// clip_grad_norm_(1.0), constant schedule. Shared by the CPU (test_train.cpp) and CUDA
// (tests/cuda/test_cuda_train.cpp) step tests.
#include "dreambooth/pipelines/train_step.h"
#include "test_helpers.h"

namespace db::test {

inline MicroBatch harness_batch(const Golden& tr) {
  MicroBatch mb;
  mb.latents = nchw_to_nhwc(tr["train.latents"]);
  mb.noise = nchw_to_nhwc(tr["train.noise"]);
  const Tensor t64 = tr["train.timesteps"];
  for (int64_t i = 0; i < t64.numel(); ++i) mb.timesteps.push_back(int(t64.data<int64_t>()[i]));
  mb.ids = tr["train.input_ids"];
  mb.pairs = 1;
  mb.prior = true;
  return mb;
}

inline StepOptions harness_step_options() {
  StepOptions opt;
  opt.lr = make_lr_schedule("constant", 1e-3f, 0, 3);
  opt.adam = AdamWConfig{0.9, 0.999, 1e-8, 1e-2};
  opt.max_grad_norm = 1.0f;
  return opt;
}

// One optimizer step on one micro-batch through TrainStep.
inline StepResult one_step(Ctx& ctx, TrainState& st, const NoiseSchedule& sched, const MicroBatch& mb,
                           const StepOptions& opt, int64_t step) {
  TrainStep ts(ctx, st, sched, opt);
  ts.micro_batch(mb);
  ts.update(step);
  return ts.finish();
}

}  // namespace db::test
