#include "device_allocator.h"

#include <map>
#include <mutex>
#include <vector>

#include "cuda_check.h"
#include "dreambooth/backend/size_class.h"

namespace db::cuda {

struct DeviceAllocator::State {
  int device = 0;
  cudaStream_t stream = nullptr;
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;
  size_t in_use = 0, peak = 0, reserved = 0;

  ~State() {
    cudaStreamSynchronize(stream);
    for (auto& [size, blocks] : free)
      for (void* p : blocks) cudaFreeAsync(p, stream);
    cudaStreamSynchronize(stream);
  }
  void release_cached_locked() {
    cudaStreamSynchronize(stream);
    for (auto& [size, blocks] : free) {
      for (void* p : blocks) cudaFreeAsync(p, stream);
      reserved -= size * blocks.size();
    }
    free.clear();
    cudaStreamSynchronize(stream);
  }
  void* take(size_t cls, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu);
    void* p = nullptr;
    auto it = free.find(cls);
    if (it != free.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
    } else {
      cudaError_t e = cudaMallocAsync(&p, cls, stream);
      if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        release_cached_locked();
        e = cudaMallocAsync(&p, cls, stream);
      }
      if (e != cudaSuccess) {
        cudaGetLastError();
        throw Error("CUDA device ", device, ": out of memory allocating ", bytes, " bytes (", in_use,
                    " bytes in use, ", reserved, " reserved): ", cudaGetErrorString(e));
      }
      reserved += cls;
    }
    in_use += cls;
    if (in_use > peak) peak = in_use;
    return p;
  }
  void give_back(void* p, size_t cls) {
    std::lock_guard<std::mutex> lock(mu);
    in_use -= cls;
    free[cls].push_back(p);
  }
};

DeviceAllocator::DeviceAllocator(int device, cudaStream_t stream) : state_(std::make_shared<State>()) {
  state_->device = device;
  state_->stream = stream;
}

std::shared_ptr<void> DeviceAllocator::scratch(size_t bytes) {
  const size_t cls = pool_size_class(bytes, 512, 512);
  void* p = state_->take(cls, bytes);
  std::shared_ptr<State> st = state_;
  return std::shared_ptr<void>(p, [st, cls](void* q) { st->give_back(q, cls); });
}

Tensor DeviceAllocator::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) DB_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  std::shared_ptr<void> block = scratch(bytes);
  return Tensor::wrap(block.get(), shape, dtype, Device::CUDA, block);
}

MemoryStats DeviceAllocator::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return {state_->in_use, state_->peak, state_->reserved};
}

void DeviceAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->peak = state_->in_use;
}

void DeviceAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->release_cached_locked();
}

}  // namespace db::cuda
