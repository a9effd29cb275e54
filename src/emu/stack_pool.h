#pragma once
// Fiber stacks for the emulated CUDA threads: mmap'd, with a PROT_NONE guard page below each (a
// kernel that overflows its stack faults instead of corrupting a neighbour), and kept for reuse, since
// every block creates one fiber per CUDA thread and a grid runs many blocks. One pool per worker.
#include <boost/context/stack_context.hpp>

#include <cstddef>
#include <vector>

namespace db::emu::detail {

class StackPool {
 public:
  StackPool() = default;
  ~StackPool();
  StackPool(const StackPool&) = delete;
  StackPool& operator=(const StackPool&) = delete;

  // A stack of at least `bytes` usable bytes (page-rounded). A change of size drops the cached stacks.
  boost::context::stack_context allocate(size_t bytes);
  void deallocate(boost::context::stack_context& sc);

 private:
  void release_cached();
  size_t usable_ = 0;        // bytes above the guard page of every cached stack
  std::vector<void*> free_;  // mapping bases (the guard page)
};

// The StackAllocator boost::context::fiber expects, drawing from a pool; reports where the stack is
// (for AddressSanitizer's fiber annotations).
class PooledStack {
 public:
  PooledStack(StackPool& pool, size_t bytes, const void** bottom, size_t* size)
      : pool_(&pool), bytes_(bytes), bottom_(bottom), size_(size) {}
  boost::context::stack_context allocate() {
    boost::context::stack_context sc = pool_->allocate(bytes_);
    *bottom_ = static_cast<char*>(sc.sp) - sc.size;
    *size_ = sc.size;
    return sc;
  }
  void deallocate(boost::context::stack_context& sc) noexcept { pool_->deallocate(sc); }

 private:
  StackPool* pool_;
  size_t bytes_;
  const void** bottom_;
  size_t* size_;
};

}  // namespace db::emu::detail
