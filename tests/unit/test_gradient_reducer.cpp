// GradientReducer: block-by-block reduction of gradients over ranks (dist/gradient_reducer.h), with a
// recording communicator standing in for MPI: every element reduced exactly once per step, buckets
// merged in registry order (never by address), the 1/world average applied once.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/dist/gradient_reducer.h"

using namespace db;

namespace {

// "Reduces" by doubling (what a 2-rank sum of equal gradients gives) and records each call.
class RecordingComm final : public Communicator {
 public:
  const char* name() const override { return "recording"; }
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void allreduce_sum(Tensor& t) override {
    calls.push_back({t.raw(), t.numel()});
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] *= 2.f;
  }
  // As if the other rank held the same values: this rank's part doubles, the rest is poisoned (the
  // contract leaves it unspecified).
  void reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) override {
    calls.push_back({t.raw(), t.numel()});
    scatter_counts.push_back(counts);
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = i < counts[0] ? t.f32()[i] * 2.f : -1e30f;
  }
  void all_gather(Tensor& t, const std::vector<int64_t>& counts) override {}
  int allreduce_count() const { return int(calls.size() - scatter_counts.size()); }
  std::vector<std::pair<void*, int64_t>> calls;
  std::vector<std::vector<int64_t>> scatter_counts;
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

TEST(GradientReducer, ShardLayoutCoversInAlignedRanges) {
  const ShardLayout a(100, 3);  // 7 blocks of 16: 2, 2, 3 blocks
  EXPECT_EQ(a.counts(), (std::vector<int64_t>{32, 32, 36}));
  EXPECT_EQ(a.counts_in(20, 70), (std::vector<int64_t>{12, 32, 6}));
  EXPECT_EQ(a.counts_in(64, 64), (std::vector<int64_t>{0, 0, 0}));
  const ShardLayout b(10, 4);  // fewer blocks than ranks: the last rank owns everything
  EXPECT_EQ(b.counts(), (std::vector<int64_t>{0, 0, 0, 10}));
  EXPECT_THROW(ShardLayout(10, 0), Error);
}

// Sharded: every bucket is reduce-scattered with the counts of the shard boundary inside it, and only
// the owned range [0, 48) of rank 0 is averaged.
TEST(GradientReducer, ShardedBucketsReduceScatterTheOwnedRange) {
  CpuOps ops;
  RecordingComm comm;
  const ParamRegistry r = toy_registry();  // 96 elements: rank 0 owns [0, 48), rank 1 [48, 96)
  const ShardLayout shard(r.total_numel(), 2);
  Tensor g = Tensor::empty({r.total_numel()});
  for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = float(i);
  GradientReducer red(comm, ops, /*bucket_bytes=*/64);
  red.attach("unet", r, g, &shard);
  red.ready("unet", "mid_block.");      // [80, 96): rank 1's only
  red.ready("unet", "down_blocks.0.");  // [16, 64): cut by the boundary at 48
  red.finish();                         // conv_in. [0, 16) and up_blocks.0. [64, 80)
  EXPECT_EQ(comm.allreduce_count(), 0);
  ASSERT_EQ(comm.scatter_counts.size(), 4u);
  EXPECT_EQ(comm.scatter_counts[0], (std::vector<int64_t>{0, 16}));
  EXPECT_EQ(comm.scatter_counts[1], (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(comm.scatter_counts[2], (std::vector<int64_t>{16, 0}));
  EXPECT_EQ(comm.scatter_counts[3], (std::vector<int64_t>{0, 16}));
  for (int64_t i = 0; i < 48; ++i) ASSERT_EQ(g.f32()[i], float(i)) << i;  // x2 then /2
  const ShardLayout wrong(r.total_numel(), 3);
  GradientReducer red3(comm, ops, 64);
  EXPECT_THROW(red3.attach("unet", r, g, &wrong), Error);  // 3 parts for a world of 2
}

namespace {

// An asynchronous communicator as NCCL is to the compute stream: an issued collective completes only at
// wait_issued(), where the other rank's gradient (100 + i at flat element i) is added. Everything is
// logged in order with the test's own "ready" marks.
class AsyncComm final : public Communicator {
 public:
  explicit AsyncComm(const Tensor& base) : base_(base) {}
  const char* name() const override { return "async"; }
  int rank() const override { return 0; }
  int size() const override { return 2; }
  void allreduce_sum(Tensor&) override { log.push_back("sync allreduce"); }
  void reduce_scatter_sum(Tensor&, const std::vector<int64_t>&) override {
    log.push_back("sync reduce_scatter");
  }
  void all_gather(Tensor&, const std::vector<int64_t>&) override {}
  void issue_allreduce_sum(Tensor& t) override {
    const int64_t first = t.f32() - base_.f32();
    log.push_back("issue " + std::to_string(first) + "-" + std::to_string(first + t.numel()));
    issued_.push_back(t);
  }
  void wait_issued() override {
    log.push_back("wait");
    for (Tensor& t : issued_)
      for (int64_t i = 0, first = t.f32() - base_.f32(); i < t.numel(); ++i)
        t.f32()[i] += float(100 + first + i);
    issued_.clear();
  }
  std::vector<std::string> log;

 private:
  Tensor base_;
  std::vector<Tensor> issued_;
};

}  // namespace

// Buckets are issued while backward runs (between the announcements), never waited for there; finish()
// issues the rest, waits once, and only then averages: (g + other) / 2 exactly.
TEST(GradientReducer, IssuesDuringBackwardWaitsOnceBeforeAveraging) {
  CpuOps ops;
  const ParamRegistry r = toy_registry();
  Tensor g = Tensor::empty({r.total_numel()});
  for (int64_t i = 0; i < g.numel(); ++i) g.f32()[i] = float(i);
  AsyncComm comm(g);
  GradientReducer red(comm, ops, /*bucket_bytes=*/64);
  red.attach("unet", r, g);
  for (const char* p : {"mid_block.", "up_blocks.0.", "down_blocks.0."}) {
    comm.log.push_back(std::string("ready ") + p);
    red.ready("unet", p);
  }
  comm.log.push_back("finish");
  red.finish();
  const std::vector<std::string> want = {"ready mid_block.", "issue 80-96",          "ready up_blocks.0.",
                                         "issue 64-80",      "ready down_blocks.0.", "issue 16-64",
                                         "finish",           "issue 0-16",           "wait"};
  EXPECT_EQ(comm.log, want);
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_EQ(g.f32()[i], float(i + 100 + i) / 2.f) << i;
}

// --bucket-mb 0: nothing is issued during backward; finish() reduces one merged span, then waits.
TEST(GradientReducer, BucketZeroReducesEverythingInFinish) {
  CpuOps ops;
  const ParamRegistry r = toy_registry();
  Tensor g = Tensor::zeros({r.total_numel()});
  AsyncComm comm(g);
  GradientReducer red(comm, ops, /*bucket_bytes=*/0);
  red.attach("unet", r, g);
  red.ready("unet", "mid_block.");
  red.ready("unet", "up_blocks.0.");
  EXPECT_TRUE(comm.log.empty());
  red.finish();
  EXPECT_EQ(comm.log, (std::vector<std::string>{"issue 0-96", "wait"}));
  for (int64_t i = 0; i < g.numel(); ++i) ASSERT_EQ(g.f32()[i], float(100 + i) / 2.f) << i;
}
