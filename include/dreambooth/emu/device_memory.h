#pragma once
// The emulated device memory as tests see it. cudaMalloc / cudaMallocAsync / cudaMallocManaged /
// cudaMallocHost return blocks filled with 0xFF (NaN in f32 and bf16) between guard zones; the
// allocation table below is what memcpy/memset bounds checks and launch pointer checks consult.
#include <cstddef>
#include <cstdint>
#include <optional>

namespace db::emu {

enum class MemoryKind { Device, Managed, PinnedHost };

struct AllocationInfo {
  const void* base;
  size_t size;
  MemoryKind kind;
  uint64_t id;  // 1, 2, ... in allocation order (named in messages)
  int device;   // the device current at allocation; -1 for pinned host memory
};

// The allocation containing p (p == base + size counts, as a one-past-the-end pointer), if any.
std::optional<AllocationInfo> find_allocation(const void* p);
size_t live_allocation_count();
size_t live_allocation_bytes();
size_t live_allocation_bytes(int device);  // device and managed allocations made on `device`

}  // namespace db::emu
