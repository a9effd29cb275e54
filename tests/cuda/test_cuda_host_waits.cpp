// Emulator only (the count comes from its stream-order model; Makefile EMU_ONLY): the training step's
// host waits.
#include <gtest/gtest.h>

#include "../../src/backend/cuda/cuda_ops.h"
#include "../unit/test_helpers.h"
#include "../unit/train_harness.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/emu/host_waits.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/pipelines/train_step.h"

namespace db {
namespace {

using test::Golden;
using test::golden_path;

// ARCHITECTURE.md, "Host synchronisations per step": one, TrainStep::finish's, however many
// micro-batches (the pinned upload ring must not wait for a block still queued behind the previous
// micro-batch's backward). Counted by the emulator's stream-order model (dreambooth/emu/host_waits.h).
TEST(CudaTrain, OneHostWaitPerStep) {
  cuda::CudaOps gpu(0);
  Ctx ctx{gpu};
  const Golden tr("sd1-tiny/train.safetensors");
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny") + "/model");
  TrainState st = TrainState::load(gpu, mf, true);
  const NoiseSchedule sched(mf.scheduler);
  const MicroBatch mb = test::harness_batch(tr);
  const StepOptions opt = test::harness_step_options();
  test::one_step(ctx, st, sched, mb, opt, 0);  // warm-up: plan caches, the pinned ring's blocks
  for (int micro : {1, 2, 3}) {
    const uint64_t before = emu::host_waits();
    TrainStep ts(ctx, st, sched, opt);
    for (int i = 0; i < micro; ++i) ts.micro_batch(mb, 1.f / float(micro), i + 1 == micro);
    ts.update(micro);
    ts.finish();
    EXPECT_EQ(emu::host_waits() - before, 1u) << micro << " micro-batches";
  }
}

}  // namespace
}  // namespace db
