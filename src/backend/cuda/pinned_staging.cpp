#include "pinned_staging.h"

#include <algorithm>
#include <bit>
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
  Block& b = next_free_block();
  if (b.capacity < bytes) {  // cudaFreeHost synchronises the device: rare by rounding up
    if (b.p) DB_CUDA(cudaFreeHost(b.p));
    b.p = nullptr;
    b.capacity = 0;
    const size_t size = std::max(kMinBlockBytes, std::bit_ceil(bytes));
    DB_CUDA(cudaHostAlloc(&b.p, size, cudaHostAllocDefault));
    b.capacity = size;
  }
  std::memcpy(b.p, host, bytes);
  DB_CUDA(cudaMemcpyAsync(dst, b.p, bytes, cudaMemcpyHostToDevice, stream_));
  DB_CUDA(cudaEventRecord(b.done, stream_));
}

// The block after the last one used, or a new one inserted before it while its copy is still queued
// (the ring stays in upload order: next_ keeps pointing at the oldest block).
PinnedStaging::Block& PinnedStaging::next_free_block() {
  if (ring_.empty()) {
    ring_.resize(kFirstBlocks);
    for (Block& b : ring_) DB_CUDA(cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming));
  }
  const cudaError_t q = cudaEventQuery(ring_[next_].done);
  if (q == cudaErrorNotReady && ring_.size() < kMaxBlocks) {
    Block fresh;
    DB_CUDA(cudaEventCreateWithFlags(&fresh.done, cudaEventDisableTiming));
    ring_.insert(ring_.begin() + std::ptrdiff_t(next_), fresh);
  } else if (q == cudaErrorNotReady) {
    DB_CUDA(cudaEventSynchronize(ring_[next_].done));  // kMaxBlocks in flight: wait for the oldest
  } else {
    DB_CUDA(q);
  }
  Block& b = ring_[next_];
  next_ = (next_ + 1) % ring_.size();
  return b;
}

size_t PinnedStaging::pinned_bytes() const {
  size_t n = 0;
  for (const Block& b : ring_) n += b.capacity;
  return n;
}

}  // namespace db::cuda
