// GradientReducer: block-by-block reduction of gradients over ranks (dist/gradient_reducer.h), with a
// recording communicator standing in for MPI: every element reduced exactly once per step, buckets
// merged in registry order (never by address), the 1/world average applied once.
#include <gtest/gtest.h>

#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/dist/gradient_reducer.h"

using namespace db;

namespace {

// "Reduces" by doubling (what a 2-rank sum of equal gradients gives) and records each call.
class RecordingComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void allreduce_sum(Tensor& t) override {
    calls.push_back({t.raw(), t.numel()});
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] *= 2.f;
  }
  std::vector<std::pair<void*, int64_t>> calls;
};

ParamRegistry toy_registry() {
  ParamRegistry r;
  r.add("conv_in.weight", {4, 3});        // 12 -> padded 16
  r.add("down_blocks.0.a.weight", {20});  // 20 -> 32
  r.add("down_blocks.0.b.bias", {5});     // 5 -> 16
  r.add("up_blocks.0.a.weight", {7});     // 7 -> 16
  r.add("mid_block.a.weight", {3});       // 3 -> 16
  return r;
}

}  // namespace

TEST(GradientReducer, RangeOfAPrefix) {
  const ParamRegistry r = toy_registry();
  EXPECT_EQ(r.range("down_blocks.0."), (std::pair<int64_t, int64_t>(16, 64)));
  EXPECT_EQ(r.range("mid_block."), (std::pair<int64_t, int64_t>(80, 96)));
  EXPECT_THROW(r.range("up_blocks.9."), Error);
  ParamRegistry split;
  split.add("a.x", {1});
  split.add("b.x", {1});
  split.add("a.y", {1});
  EXPECT_THROW(split.range("a."), Error);  // not contiguous
}

TEST(GradientReducer, EveryElementOnceAndAveraged) {
  CpuOps ops;
  RecordingComm comm;
  const ParamRegistry r = toy_registry();
  Tensor g = Tensor::empty({r.total_numel()});
  for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = float(i);
  GradientReducer red(comm, ops, /*bucket_bytes=*/64);
  red.attach("unet", r, g);
  red.ready("unet", "mid_block.");                       // 64 bytes: reduced at once
  red.ready("unet", "up_blocks.0.");                     // 64 bytes
  red.ready("unet", "down_blocks.0.");                   // 192 bytes
  EXPECT_THROW(red.ready("unet", "mid_block."), Error);  // announced twice
  red.finish();                                          // conv_in. was never announced
  for (int64_t i = 0; i < g.numel(); ++i)
    ASSERT_EQ(g.f32()[i], float(i)) << i;  // x2 then /2: every element once
  EXPECT_EQ(comm.calls.size(), 4u);
  // A second step works the same (the flags were reset).
  red.ready("unet", "up_blocks.0.");
  red.finish();
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_EQ(g.f32()[i], float(i)) << i;
}

TEST(GradientReducer, NeighboursMergeIntoOneCall) {
  CpuOps ops;
  RecordingComm comm;
  const ParamRegistry r = toy_registry();
  Tensor g = Tensor::zeros({r.total_numel()});
  GradientReducer red(comm, ops, /*bucket_bytes=*/1 << 20);  // one bucket for everything
  red.attach("unet", r, g);
  red.ready("unet", "mid_block.");
  red.ready("unet", "up_blocks.0.");  // adjacent in memory to mid_block. (before it)
  red.finish();
  ASSERT_EQ(comm.calls.size(), 1u);  // conv_in .. mid_block is one contiguous span
  EXPECT_EQ(comm.calls[0].second, r.total_numel());
}
