#include "dreambooth/backend/host_pool.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#include "dreambooth/backend/size_class.h"
#include "dreambooth/core/error.h"

namespace db {

struct HostPool::State {
  std::mutex mu;
  std::map<size_t, std::vector<void*>> free;  // size class -> cached blocks
  size_t in_use = 0, peak = 0, reserved = 0;

  ~State() {
    for (auto& [size, blocks] : free)
      for (void* p : blocks) std::free(p);
  }
  void release_cached_locked() {
    for (auto& [size, blocks] : free) {
      for (void* p : blocks) std::free(p);
      reserved -= size * blocks.size();
    }
    free.clear();
  }
};

HostPool::HostPool() : state_(std::make_shared<State>()) {}

Tensor HostPool::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) DB_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  const size_t cls = pool_size_class(bytes, 64, 64);  // aligned_alloc wants a multiple of 64
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    auto it = state_->free.find(cls);
    if (it != state_->free.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
    } else {
      p = std::aligned_alloc(64, cls);
      if (!p) {  // give the cache back and try once more
        state_->release_cached_locked();
        p = std::aligned_alloc(64, cls);
      }
      if (!p)
        throw Error("out of host memory allocating ", bytes, " bytes for ", dtype_name(dtype),
                    shape_str(shape), " (", state_->in_use, " bytes in use)");
      state_->reserved += cls;
    }
    state_->in_use += cls;
    if (state_->in_use > state_->peak) state_->peak = state_->in_use;
  }
  std::shared_ptr<State> st = state_;
  std::shared_ptr<void> owner(p, [st, cls](void* q) {
    std::lock_guard<std::mutex> lock(st->mu);
    st->in_use -= cls;
    st->free[cls].push_back(q);
  });
  return Tensor::wrap(p, shape, dtype, Device::CPU, std::move(owner));
}

MemoryStats HostPool::stats() const {
  std::lock_guard<std::mutex> lock(state_->mu);
  return {state_->in_use, state_->peak, state_->reserved};
}

void HostPool::reset_peak() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->peak = state_->in_use;
}

void HostPool::release_cached() {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->release_cached_locked();
}

}  // namespace db
