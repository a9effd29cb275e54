#pragma once
// HostPool: the CPU backend's caching allocator. A freed block goes back to a free list of its size
// class and is handed out again, so a training step allocates nothing from the system after the first
// (activations of every step have the same shapes). Blocks are 64-byte aligned; sizes round up to a
// class of 2^k x {1, 1.25, 1.5, 1.75} (at most 25% slack). Thread-safe. Tensors keep the pool's state
// alive, so a tensor may outlive the CpuOps that made it.
#include <cstddef>
#include <memory>

#include "dreambooth/backend/ops.h"

namespace db {

class HostPool {
 public:
  HostPool();
  // An uninitialised tensor whose storage returns to this pool when its last view is dropped.
  Tensor empty(const Shape& shape, DType dtype);
  MemoryStats stats() const;
  void reset_peak();
  // Returns every cached (free) block to the system.
  void release_cached();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace db
