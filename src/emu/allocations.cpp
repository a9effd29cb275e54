// Emulated device memory: allocations from the host heap, poisoned, between guard zones, in one table
// that bounds checks (memcpy, memset, cp.async) and launch pointer checks consult.
#include "allocations.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "guard.h"

namespace db::emu {
namespace detail {
namespace {

struct Allocation {
  unsigned char* raw;  // start of the front guard
  size_t size;         // user bytes
  size_t back_guard;   // bytes after the user bytes
  MemoryKind kind;
  uint64_t id;
  int device;
};

struct Table {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> by_start;  // keyed by the user pointer
  uint64_t next_id = 1;
  size_t bytes = 0;
  std::map<int, size_t> device_bytes;
};

Table& table() {
  static Table t;
  return t;
}

AllocationInfo info(uintptr_t start, const Allocation& a) {
  return {reinterpret_cast<const void*>(start), a.size, a.kind, a.id, a.device};
}

std::string guard_damage(uintptr_t start, const Allocation& a) {
  const size_t front = first_damaged(a.raw, kAllocationGuardBytes);
  if (front != kAllocationGuardBytes)
    return describe(info(start, a)) + ": " + std::to_string(kAllocationGuardBytes - front) +
           " guard bytes before its start overwritten (an out-of-bounds write below the allocation)";
  const unsigned char* back = a.raw + kAllocationGuardBytes + a.size;
  const size_t first = first_damaged(back, a.back_guard);
  if (first != a.back_guard)
    return describe(info(start, a)) + ": " + std::to_string(damaged_count(back, a.back_guard)) +
           " guard bytes after its end overwritten, the first at byte " + std::to_string(a.size + first) +
           " (an out-of-bounds write past the allocation)";
  return "";
}

}  // namespace

const char* kind_name(MemoryKind k) {
  switch (k) {
    case MemoryKind::Device:
      return "device";
    case MemoryKind::Managed:
      return "managed";
    case MemoryKind::PinnedHost:
      return "pinned host";
  }
  return "?";
}

std::string describe(const AllocationInfo& a) {
  std::string where = kind_name(a.kind);
  if (a.kind != MemoryKind::PinnedHost) where += " " + std::to_string(a.device);
  return "allocation #" + std::to_string(a.id) + " (" + std::to_string(a.size) + " bytes, " + where + ")";
}

void* allocate(size_t bytes, MemoryKind kind, int device, size_t limit, AllocateResult* result) {
  Table& t = table();
  std::unique_lock lock(t.mutex);
  if (limit && t.device_bytes[device] + bytes > limit) {
    *result = AllocateResult::OverDeviceLimit;
    return nullptr;
  }
  t.device_bytes[device] += bytes;  // reserved before the lock is dropped for the host allocation
  lock.unlock();
  const size_t total = kAllocationGuardBytes + (bytes + kAllocationGuardBytes * 2 - 1) /
                                                   kAllocationGuardBytes * kAllocationGuardBytes;
  auto* raw = static_cast<unsigned char*>(std::aligned_alloc(kAllocationGuardBytes, total));
  if (!raw) {
    lock.lock();
    t.device_bytes[device] -= bytes;
    *result = AllocateResult::OutOfHostMemory;
    return nullptr;
  }
  unsigned char* user = raw + kAllocationGuardBytes;
  const size_t back = total - kAllocationGuardBytes - bytes;
  write_guard(raw, kAllocationGuardBytes);
  std::memset(user, kPoisonByte, bytes);
  write_guard(user + bytes, back);
  lock.lock();
  t.by_start[reinterpret_cast<uintptr_t>(user)] = {raw, bytes, back, kind, t.next_id++, device};
  t.bytes += bytes;
  *result = AllocateResult::Ok;
  return user;
}

std::string release(void* p, bool accept_device, bool accept_host, const char* api) {
  Table& t = table();
  std::unique_lock lock(t.mutex);
  auto it = t.by_start.find(reinterpret_cast<uintptr_t>(p));
  if (it == t.by_start.end()) {
    lock.unlock();
    if (auto a = find_allocation(p))
      return std::string(api) + ": pointer is inside " + describe(*a) + ", not its start";
    return std::string(api) + ": pointer was not returned by an emulated allocation (or was freed already)";
  }
  const Allocation a = it->second;
  const bool host = a.kind == MemoryKind::PinnedHost;
  if ((host && !accept_host) || (!host && !accept_device))
    return std::string(api) + ": " + describe(info(it->first, a)) + " is of the wrong kind for this call";
  std::string damage = guard_damage(it->first, a);
  t.by_start.erase(it);
  t.bytes -= a.size;
  t.device_bytes[a.device] -= a.size;
  lock.unlock();
  unpoison(a.raw, kAllocationGuardBytes + a.size + a.back_guard);
  std::free(a.raw);
  return damage.empty() ? "" : std::string(api) + ": " + damage;
}

std::string check_all_guards() {
  Table& t = table();
  std::lock_guard lock(t.mutex);
  std::string first;
  for (const auto& [start, a] : t.by_start) {
    std::string damage = guard_damage(start, a);
    if (damage.empty()) continue;
    if (first.empty()) first = damage;
    // Repaired once reported, so that later launches are not blamed for the same bytes.
    write_guard(a.raw, kAllocationGuardBytes);
    write_guard(a.raw + kAllocationGuardBytes + a.size, a.back_guard);
  }
  return first;
}

}  // namespace detail

std::optional<AllocationInfo> find_allocation(const void* p) {
  detail::Table& t = detail::table();
  const auto key = reinterpret_cast<uintptr_t>(p);
  std::lock_guard lock(t.mutex);
  auto it = t.by_start.upper_bound(key);
  if (it == t.by_start.begin()) return std::nullopt;
  --it;
  if (key > it->first + it->second.size) return std::nullopt;
  return detail::info(it->first, it->second);
}

size_t live_allocation_count() {
  detail::Table& t = detail::table();
  std::lock_guard lock(t.mutex);
  return t.by_start.size();
}

size_t live_allocation_bytes() {
  detail::Table& t = detail::table();
  std::lock_guard lock(t.mutex);
  return t.bytes;
}

size_t live_allocation_bytes(int device) {
  detail::Table& t = detail::table();
  std::lock_guard lock(t.mutex);
  const auto it = t.device_bytes.find(device);
  return it == t.device_bytes.end() ? 0 : it->second;
}

}  // namespace db::emu
