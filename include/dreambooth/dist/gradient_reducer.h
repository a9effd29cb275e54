#pragma once
// GradientReducer: averages the models' gradients over the ranks block by block, as backward finishes
// them (DESIGN.md decision 15). Backward announces "the gradients under this prefix are final"
// (nn/module.h Ctx::grads_ready, e.g. "up_blocks.2."); the reducer turns the prefix into its flat range
// (ParamRegistry::range), gathers ranges into a bucket, and all-reduces a bucket once it holds at least
// `bucket_bytes`. The buckets are issued (Communicator::issue_*), not waited for: on the NCCL
// communicator the reduction of early blocks overlaps the backward of later ones. finish() reduces
// whatever was not announced, waits for everything issued (Communicator::wait_issued), then divides by
// the world size: every element is reduced exactly once per step, in the same order on every rank.
// bucket_bytes 0 (--bucket-mb 0): no overlap, every range is reduced in finish(). On a world of one
// rank nothing is reduced or scaled.
//
// Sharded (--shard-optimizer, ZeRO-1): a model attached with a ShardLayout has its buckets
// reduce-scattered instead: each rank receives the sum of the part of the bucket it owns, and finish()
// scales only the owned range; the rest of that gradient buffer is left unspecified (the optimizer
// reads the owned range only).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/shard.h"
#include "dreambooth/nn/param_registry.h"

namespace db {

class GradientReducer {
 public:
  GradientReducer(Communicator& comm, Ops& ops, size_t bucket_bytes);
  // A model's gradient buffer (F32, laid out by `reg`); models are named in backward order by the caller.
  // `shard`: the model's optimizer is sharded with this layout (null: all-reduced).
  void attach(const std::string& model, const ParamRegistry& reg, const Tensor& grad,
              const ShardLayout* shard = nullptr);
  // The gradients of `model` under `prefix` are final for this step.
  void ready(const std::string& model, const std::string& prefix);
  // Reduces every range not yet reduced, then scales all gradients by 1 / world size.
  void finish();

 private:
  struct Model {
    std::string name;
    const ParamRegistry* reg;
    Tensor grad;
    std::vector<char> reduced;  // per parameter: already reduced this step
    ShardLayout shard;          // ranks() == 0: not sharded
  };
  Model& find(const std::string& model);
  void flush();

  Communicator& comm_;
  Ops& ops_;
  size_t bucket_bytes_;
  std::vector<Model> models_;
  struct Range {
    size_t model;
    int64_t first, second;  // flat elements [first, second) of that model's gradient
  };
  void add(size_t model, int64_t first, int64_t second);
  std::vector<Range> pending_;  // waiting for their bucket
  size_t pending_bytes_ = 0;
};

}  // namespace db
