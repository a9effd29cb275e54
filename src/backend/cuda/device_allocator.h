#pragma once
// DeviceAllocator: the CUDA backend's stream-ordered caching allocator (issue 14). Every op runs on one
// stream, so a block freed by the host (its last tensor dropped) can be handed to the next allocation at
// once: any kernel that still reads it was enqueued earlier on the same stream. Sizes round up to the
// classes of HostPool (2^k x {1, 1.25, 1.5, 1.75}, at least 512 bytes); cudaMallocAsync only on a miss,
// so a training step allocates nothing from the driver after the first. On an out-of-memory the cache is
// returned to the driver and the allocation retried once; a second failure names the request and the
// bytes in use. Tensors keep the allocator's state alive.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "dreambooth/backend/ops.h"

namespace db::cuda {

class DeviceAllocator {
 public:
  DeviceAllocator(int device, cudaStream_t stream);
  Tensor empty(const Shape& shape, DType dtype);
  // Raw scratch memory for one op (workspaces); returned to the cache when the handle is dropped.
  std::shared_ptr<void> scratch(size_t bytes);
  MemoryStats stats() const;
  void reset_peak();
  void release_cached();  // synchronises the stream first

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace db::cuda
