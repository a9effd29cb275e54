#pragma once
// Host-to-device uploads through pinned (page-locked) staging blocks, so that an upload is a true
// asynchronous DMA that overlaps the kernels already queued, and the caller's buffer is free as soon as
// upload() returns (the loader reuses its batch buffers). A copy from pageable memory would instead be
// staged by the driver through its own bounce buffer, serialising with the host thread.
//
// A ring of blocks, each reused once the event recorded after its last copy has completed. When the next
// block's copy is still queued (behind the kernels issued before it: a step uploads each micro-batch
// after issuing the previous one's backward), a new block joins the ring there instead of the host
// waiting, so the ring grows to the uploads in flight (steady state: one training step's) and a step
// has no host wait but its own (TrainStep::finish; tests/cuda/test_cuda_train.cpp counts them). Up to
// kMaxBlocks; beyond, the oldest block is waited for. A block grows (cudaFreeHost, which synchronises the
// device, + cudaHostAlloc) to the power of two >= the largest upload it has carried, at least 1 MiB. Uploads
// larger than kMaxBytes (model weights at load time, once) go straight from pageable memory.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

namespace db::cuda {

class PinnedStaging {
 public:
  static constexpr size_t kFirstBlocks = 4, kMaxBlocks = 64;
  static constexpr size_t kMinBlockBytes = size_t(1) << 20;  // blocks are powers of two, >= 1 MiB
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
  Block& next_free_block();
  cudaStream_t stream_;
  std::vector<Block> ring_;
  size_t next_ = 0;
};

}  // namespace db::cuda
