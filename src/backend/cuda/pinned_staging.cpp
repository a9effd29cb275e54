#include "pinned_staging.h"

#include <cstring>

#include "cuda_check.h"

namespace db::cuda {

PinnedStaging::~PinnedStaging() {
  for (Block& b : ring_) {
    if (b.done) {
      cudaEventSynchronize(b.done);
      cudaEventDestroy(b.done);
    }
    if (b.p) cudaFreeHost(b.p);
  }
}

void PinnedStaging::upload(void* dst, const void* host, size_t bytes) {
  if (bytes == 0) return;
  if (bytes > kMaxBytes) {
    DB_CUDA(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    return;
  }
  if (ring_.empty()) {
    ring_.resize(kBlocks);
    for (Block& b : ring_) DB_CUDA(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
  }
  Block& b = ring_[next_];
  next_ = (next_ + 1) % ring_.size();
  DB_CUDA(cudaEventSynchronize(b.done));  // its previous copy has left the block
  if (b.capacity < bytes) {
    if (b.p) DB_CUDA(cudaFreeHost(b.p));
    b.p = nullptr;
    b.capacity = 0;
    DB_CUDA(cudaHostAlloc(&b.p, bytes, cudaHostAllocDefault));
    b.capacity = bytes;
  }
  std::memcpy(b.p, host, bytes);
  DB_CUDA(cudaMemcpyAsync(dst, b.p, bytes, cudaMemcpyHostToDevice, stream_));
  DB_CUDA(cudaEventRecord(b.done, stream_));
}

size_t PinnedStaging::pinned_bytes() const {
  size_t n = 0;
  for (const Block& b : ring_) n += b.capacity;
  return n;
}

}  // namespace db::cuda
