#include "dreambooth/dist/shard.h"

#include <algorithm>

#include "dreambooth/core/error.h"

namespace db {

ShardLayout::ShardLayout(int64_t numel, int ranks) {
  DB_CHECK(ranks >= 1 && numel >= 0, "shard layout: ", numel, " elements over ", ranks, " ranks");
  const int64_t blocks = (numel + kAlign - 1) / kAlign;
  for (int r = 0; r <= ranks; ++r) bounds_.push_back(std::min(numel, blocks * r / ranks * kAlign));
  bounds_.back() = numel;
}

std::vector<int64_t> ShardLayout::counts_in(int64_t first, int64_t second) const {
  std::vector<int64_t> c(static_cast<size_t>(ranks()));
  for (int r = 0; r < ranks(); ++r)
    c[size_t(r)] = std::max<int64_t>(0, std::min(second, end(r)) - std::max(first, begin(r)));
  return c;
}

}  // namespace db
