#include "stack_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <new>

namespace db::emu::detail {
namespace {

size_t page_size() {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

StackPool::~StackPool() {
  release_cached();
}

void StackPool::release_cached() {
  for (void* base : free_) munmap(base, usable_ + page_size());
  free_.clear();
}

boost::context::stack_context StackPool::allocate(size_t bytes) {
  const size_t page = page_size();
  const size_t usable = (bytes + page - 1) / page * page;
  if (usable != usable_) {
    release_cached();
    usable_ = usable;
  }
  void* base = nullptr;
  if (!free_.empty()) {
    base = free_.back();
    free_.pop_back();
  } else {
    base = mmap(nullptr, usable + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
    if (base == MAP_FAILED) throw std::bad_alloc();
    mprotect(base, page, PROT_NONE);  // stacks grow down into the guard page
  }
  boost::context::stack_context sc;
  sc.size = usable;
  sc.sp = static_cast<char*>(base) + page + usable;
  return sc;
}

void StackPool::deallocate(boost::context::stack_context& sc) {
  void* base = static_cast<char*>(sc.sp) - sc.size - page_size();
  if (sc.size == usable_)
    free_.push_back(base);
  else
    munmap(base, sc.size + page_size());
}

}  // namespace db::emu::detail
