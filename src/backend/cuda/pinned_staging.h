#pragma once
// Host-to-device uploads through pinned (page-locked) staging blocks, so that an upload is a true
// asynchronous DMA that overlaps the kernels already queued, and the caller's buffer is free as soon as
// upload() returns (the loader reuses its batch buffers). A copy from pageable memory would instead be
// staged by the driver through its own bounce buffer, serialising with the host thread.
//
// A ring of kBlocks blocks, each reused once the event recorded after its last copy has completed; a
// block grows (cudaFreeHost + cudaHostAlloc) to the largest upload it has carried. Uploads larger than
// kMaxBytes (model weights at load time, once) go straight from pageable memory.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

namespace db::cuda {

class PinnedStaging {
 public:
  static constexpr int kBlocks = 4;
  static constexpr size_t kMaxBytes = size_t(64) << 20;

  explicit PinnedStaging(cudaStream_t stream) : stream_(stream) {}
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // Enqueues dst <- host (bytes) on the stream; `host` may be reused or freed on return.
  void upload(void* dst, const void* host, size_t bytes);
  size_t pinned_bytes() const;  // host memory held by the ring

 private:
  struct Block {
    void* p = nullptr;
    size_t capacity = 0;
    cudaEvent_t done = nullptr;
  };
  cudaStream_t stream_;
  std::vector<Block> ring_;
  size_t next_ = 0;
};

}  // namespace db::cuda
