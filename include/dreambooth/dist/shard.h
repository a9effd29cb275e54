#pragma once
// ShardLayout: how --shard-optimizer (ZeRO-1) splits a model's flat buffers over the ranks: rank r owns
// elements [begin(r), end(r)), consecutive ranges in rank order covering the buffer. Boundaries are
// multiples of kAlign elements (64 bytes of f32, so a device kernel's vector loads on an owned slice
// stay aligned); the last rank takes the remainder.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace db {

class ShardLayout {
 public:
  static constexpr int64_t kAlign = 16;
  ShardLayout() = default;
  ShardLayout(int64_t numel, int ranks);
  int ranks() const { return int(bounds_.size()) - 1; }
  int64_t numel() const { return bounds_.empty() ? 0 : bounds_.back(); }
  int64_t begin(int r) const { return bounds_[std::size_t(r)]; }
  int64_t end(int r) const { return bounds_[std::size_t(r) + 1]; }
  std::vector<int64_t> counts() const { return counts_in(0, numel()); }
  // Per rank: how many elements of [first, second) it owns (the counts of a reduce-scatter or
  // all-gather over that span).
  std::vector<int64_t> counts_in(int64_t first, int64_t second) const;

 private:
  std::vector<int64_t> bounds_;  // ranks + 1 entries
};

}  // namespace db
