#pragma once
// The table of emulated allocations (cudaMalloc & co.): each block is [guard][user bytes][guard], the
// user bytes poisoned (0xFF) at allocation, the guards checked at free and after every launch.
#include <cstddef>
#include <string>

#include "dreambooth/emu/device_memory.h"

namespace db::emu::detail {

constexpr size_t kAllocationGuardBytes = 256;  // also the alignment of what cudaMalloc returns

enum class AllocateResult { Ok, OutOfHostMemory, OverDeviceLimit };
// Allocates on `device` (-1 for pinned host memory). `limit` (0: none) caps the live bytes of that
// device; *result says why p is nullptr.
void* allocate(size_t bytes, MemoryKind kind, int device, size_t limit, AllocateResult* result);
// Releases an allocation of one of the accepted kinds. "" on success, else why not (nothing freed,
// except when only the guards were damaged: then the block is freed and the damage reported).
std::string release(void* p, bool accept_device, bool accept_host, const char* api);
std::string check_all_guards();  // the first damaged allocation, or ""
const char* kind_name(MemoryKind k);
std::string describe(const AllocationInfo& a);  // "allocation #3 (4096 bytes, device 0)"

}  // namespace db::emu::detail
