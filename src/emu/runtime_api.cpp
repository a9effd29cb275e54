// The CUDA runtime API subset the project calls, defined with the toolkit's own declarations
// (cuda_runtime_api.h) so host code compiles unchanged; the emulated build links this instead of
// cudart. Work runs synchronously when enqueued, so stream order holds trivially; events time with the
// host clock. Streams, events and allocations belong to the device current when they were made
// (devices.cpp: DB_EMU_DEVICES, cudaSetDevice, peer access). Misuse returns the runtime's error code, with
// the explanation in emu::last_violation().
#include <cuda_runtime.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "allocations.h"
#include "dreambooth/emu/options.h"
#include "dreambooth/emu/violation.h"
#include "device_limits.h"
#include "host_waits_internal.h"
#include "runtime_state.h"

struct CUstream_st {
  unsigned flags;
  int device;
};
struct CUevent_st {
  int device;
  std::chrono::steady_clock::time_point time;
  bool recorded = false;
  bool timing = true;
};

namespace db::emu::detail {
namespace {

constinit thread_local cudaError_t last_error = cudaSuccess;

struct Handles {
  std::mutex mutex;
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  std::map<const void*, size_t> max_dynamic_smem;
};
Handles& handles() {
  static Handles h;
  return h;
}

bool live_event(cudaEvent_t e) {
  std::lock_guard lock(handles().mutex);
  return handles().events.count(e) != 0;
}

size_t host_memory_bytes() {
  return size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

const char* kind_string(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost:
      return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice:
      return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost:
      return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice:
      return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault:
      return "cudaMemcpyDefault";
  }
  return "an invalid cudaMemcpyKind";
}

// [p, p + n) as the device side of a copy: inside one device or managed allocation.
std::string device_range(const void* p, size_t n, const char* role) {
  const auto a = find_allocation(p);
  if (!a || a->kind == MemoryKind::PinnedHost)
    return std::string(role) + " is not inside a device allocation" +
           (a ? " (it is " + describe(*a) + ")" : "");
  const size_t off = size_t(static_cast<const char*>(p) - static_cast<const char*>(a->base));
  if (off + n > a->size)
    return std::string(role) + " bytes [" + std::to_string(off) + ", " + std::to_string(off + n) +
           ") exceed " + describe(*a);
  return "";
}

// [p, p + n) as the host side: not device memory; bounds-checked when it is a pinned allocation.
std::string host_range(const void* p, size_t n, const char* role) {
  const auto a = find_allocation(p);
  if (!a) return "";  // ordinary host memory: nothing to check against
  if (a->kind == MemoryKind::Device)
    return std::string(role) + " is device memory (" + describe(*a) + ") but the copy kind says host";
  const size_t off = size_t(static_cast<const char*>(p) - static_cast<const char*>(a->base));
  if (off + n > a->size)
    return std::string(role) + " bytes [" + std::to_string(off) + ", " + std::to_string(off + n) +
           ") exceed " + describe(*a);
  return "";
}

bool is_device_side(const void* p) {
  const auto a = find_allocation(p);
  return a && a->kind != MemoryKind::PinnedHost;
}

cudaError_t copy(void* dst, const void* src, size_t count, cudaMemcpyKind kind, const char* api) {
  if (count == 0) return cudaSuccess;
  if (!dst || !src)
    return set_error(cudaErrorInvalidValue, std::string("[memcpy] ") + api + ": null pointer");
  bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind == cudaMemcpyDefault) {
    dst_device = is_device_side(dst);
    src_device = is_device_side(src);
  } else if (kind != cudaMemcpyHostToHost && !dst_device && !src_device) {
    return set_error(cudaErrorInvalidMemcpyDirection,
                     std::string("[memcpy] ") + api + ": invalid cudaMemcpyKind");
  }
  std::string bad =
      dst_device ? device_range(dst, count, "destination") : host_range(dst, count, "destination");
  if (bad.empty()) bad = src_device ? device_range(src, count, "source") : host_range(src, count, "source");
  if (!bad.empty())
    return set_error(cudaErrorInvalidValue, std::string("[memcpy] ") + api + "(" + std::to_string(count) +
                                                " bytes, " + kind_string(kind) + "): " + bad);
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t fill(void* p, int value, size_t count, const char* api) {
  if (count == 0) return cudaSuccess;
  const std::string bad = device_range(p, count, "destination");
  if (!bad.empty()) return set_error(cudaErrorInvalidValue, std::string("[memset] ") + api + ": " + bad);
  std::memset(p, value, count);
  return cudaSuccess;
}

cudaError_t checked_stream(cudaStream_t s, const char* api) {
  if (valid_stream(s)) return cudaSuccess;
  return set_error(cudaErrorInvalidResourceHandle, std::string("[stream] ") + api + ": not a live stream");
}

// Device and managed memory on `device` (limited by DB_EMU_DEVICE_MB); pinned host memory on none.
cudaError_t allocate_into(void** p, size_t size, MemoryKind kind, int device, const char* api) {
  if (!p) return set_error(cudaErrorInvalidValue, std::string("[malloc] ") + api + ": null result pointer");
  *p = nullptr;
  if (size == 0) return cudaSuccess;
  const bool host = kind == MemoryKind::PinnedHost;
  const size_t limit = host ? 0 : db::emu::options().device_memory;
  AllocateResult result{};
  *p = allocate(size, kind, host ? -1 : device, limit, &result);
  if (result == AllocateResult::OverDeviceLimit)
    return set_error(cudaErrorMemoryAllocation,
                     std::string("[malloc] ") + api + ": out of memory on device " + std::to_string(device) +
                         ": " + std::to_string(size) + " bytes asked, " +
                         std::to_string(db::emu::live_allocation_bytes(device)) + " of " +
                         std::to_string(limit) + " in use (DB_EMU_DEVICE_MB)");
  if (!*p)
    return set_error(cudaErrorMemoryAllocation, std::string("[malloc] ") + api + ": out of host memory for " +
                                                    std::to_string(size) + " bytes");
  return cudaSuccess;
}

// cudaMemcpyPeer's pointers must lie in device memory of the devices it names.
cudaError_t peer_copy(void* dst, int dst_device, const void* src, int src_device, size_t count,
                      const char* api) {
  if (cudaError_t e = checked_device(dst_device, "memcpy", api)) return e;
  if (cudaError_t e = checked_device(src_device, "memcpy", api)) return e;
  for (auto [p, device, role] : {std::tuple{static_cast<const void*>(dst), dst_device, "destination"},
                                 std::tuple{src, src_device, "source"}}) {
    const auto a = db::emu::find_allocation(p);
    if (count && a && a->kind != MemoryKind::PinnedHost && a->device != device)
      return set_error(cudaErrorInvalidValue, std::string("[memcpy] ") + api + ": the " + role + " is in " +
                                                  describe(*a) + ", not on device " + std::to_string(device));
  }
  return copy(dst, src, count, cudaMemcpyDeviceToDevice, api);
}

cudaError_t free_from(void* p, bool device, bool host, const char* api) {
  if (!p) return cudaSuccess;
  const std::string bad = release(p, device, host, api);
  if (bad.empty()) return cudaSuccess;
  const bool guard = bad.find("guard bytes") != std::string::npos;
  return set_error(guard ? cudaErrorIllegalAddress : cudaErrorInvalidValue, std::string("[free] ") + bad);
}

}  // namespace

cudaError_t set_error(cudaError_t error, const std::string& message) {
  set_last_violation(message);
  last_error = error;
  return error;
}

void set_last_error(cudaError_t error) {
  last_error = error;
}

bool valid_stream(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return true;
  std::lock_guard lock(handles().mutex);
  return handles().streams.count(s) != 0;
}

int stream_device(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return current_device();
  return s->device;
}

void set_max_dynamic_smem(const void* kernel, size_t bytes) {
  std::lock_guard lock(handles().mutex);
  handles().max_dynamic_smem[kernel] = bytes;
}

size_t max_dynamic_smem(const void* kernel) {
  std::lock_guard lock(handles().mutex);
  auto it = handles().max_dynamic_smem.find(kernel);
  return it == handles().max_dynamic_smem.end() ? kSharedDefaultDynamicLimit : it->second;
}

}  // namespace db::emu::detail

using db::emu::MemoryKind;
using namespace db::emu::detail;

cudaError_t cudaMalloc(void** devPtr, size_t size) {
  return allocate_into(devPtr, size, MemoryKind::Device, current_device(), "cudaMalloc");
}
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaMallocAsync")) return e;
  return allocate_into(devPtr, size, MemoryKind::Device, stream_device(stream), "cudaMallocAsync");
}
cudaError_t cudaMallocManaged(void** devPtr, size_t size, unsigned int) {
  return allocate_into(devPtr, size, MemoryKind::Managed, current_device(), "cudaMallocManaged");
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return allocate_into(ptr, size, MemoryKind::PinnedHost, -1, "cudaMallocHost");
}
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int) {
  return allocate_into(pHost, size, MemoryKind::PinnedHost, -1, "cudaHostAlloc");
}
cudaError_t cudaFree(void* devPtr) {
  if (devPtr) note_device_sync(current_device());  // cudaFree synchronises the device
  return free_from(devPtr, true, false, "cudaFree");
}
cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaFreeAsync")) return e;
  return free_from(devPtr, true, false, "cudaFreeAsync");
}
cudaError_t cudaFreeHost(void* ptr) {
  if (ptr) note_device_sync(current_device());  // so does cudaFreeHost
  return free_from(ptr, false, true, "cudaFreeHost");
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  const cudaError_t e = copy(dst, src, count, kind, "cudaMemcpy");
  const bool device =
      kind == cudaMemcpyDefault ? is_device_side(dst) || is_device_side(src) : kind != cudaMemcpyHostToHost;
  if (e == cudaSuccess && count > 0 && device) note_blocking_copy();
  return e;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaMemcpyAsync")) return e;
  const cudaError_t e = copy(dst, src, count, kind, "cudaMemcpyAsync");
  if (e != cudaSuccess) return e;
  // Into pageable host memory the real runtime returns only when the copy is done: a wait for the work
  // before it, after which nothing is outstanding.
  const bool from_device = kind == cudaMemcpyDefault ? is_device_side(src) : kind == cudaMemcpyDeviceToHost;
  const auto to = db::emu::find_allocation(dst);
  if (count > 0 && from_device && !is_device_side(dst) && !(to && to->kind == MemoryKind::PinnedHost))
    note_stream_sync(stream);
  else
    note_work(stream);
  return e;
}
cudaError_t cudaMemcpyPeer(void* dst, int dstDevice, const void* src, int srcDevice, size_t count) {
  const cudaError_t e = peer_copy(dst, dstDevice, src, srcDevice, count, "cudaMemcpyPeer");
  if (e == cudaSuccess && count > 0) note_blocking_copy();
  return e;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int dstDevice, const void* src, int srcDevice, size_t count,
                                cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaMemcpyPeerAsync")) return e;
  const cudaError_t e = peer_copy(dst, dstDevice, src, srcDevice, count, "cudaMemcpyPeerAsync");
  if (e == cudaSuccess) note_work(stream);
  return e;
}
cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  return fill(devPtr, value, count, "cudaMemset");
}
cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaMemsetAsync")) return e;
  const cudaError_t e = fill(devPtr, value, count, "cudaMemsetAsync");
  if (e == cudaSuccess) note_work(stream);
  return e;
}
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  const size_t limit = db::emu::options().device_memory;
  const size_t all = limit ? limit : host_memory_bytes();
  const size_t used = std::min(
      all, limit ? db::emu::live_allocation_bytes(current_device()) : db::emu::live_allocation_bytes());
  if (free) *free = all - used;
  if (total) *total = all;
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attributes, const void* ptr) {
  if (!attributes)
    return set_error(cudaErrorInvalidValue, "[pointer] cudaPointerGetAttributes: null attributes");
  *attributes = {};
  const auto a = db::emu::find_allocation(ptr);
  attributes->device = a && a->device >= 0 ? a->device : current_device();
  if (!a) {
    attributes->type = cudaMemoryTypeUnregistered;
    attributes->hostPointer = const_cast<void*>(ptr);
  } else if (a->kind == MemoryKind::Device) {
    attributes->type = cudaMemoryTypeDevice;
    attributes->devicePointer = const_cast<void*>(ptr);
  } else {
    attributes->type = a->kind == MemoryKind::Managed ? cudaMemoryTypeManaged : cudaMemoryTypeHost;
    attributes->devicePointer = const_cast<void*>(ptr);
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t* pStream) {
  return cudaStreamCreateWithFlags(pStream, 0);
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* pStream, unsigned int flags) {
  if (!pStream) return set_error(cudaErrorInvalidValue, "[stream] cudaStreamCreate: null result pointer");
  *pStream = new CUstream_st{flags, current_device()};
  std::lock_guard lock(handles().mutex);
  handles().streams.insert(*pStream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  {
    std::lock_guard lock(handles().mutex);
    if (handles().streams.count(stream) == 1) {
      forget_stream(stream);
      handles().streams.erase(stream);
      delete stream;
      return cudaSuccess;
    }
  }
  return set_error(cudaErrorInvalidResourceHandle, "[stream] cudaStreamDestroy: not a live created stream");
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaStreamSynchronize")) return e;
  note_stream_sync(stream);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t stream) {
  return checked_stream(stream, "cudaStreamQuery");
}
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  if (cudaError_t e = checked_stream(stream, "cudaStreamWaitEvent")) return e;
  if (!live_event(event))
    return set_error(cudaErrorInvalidResourceHandle, "[event] cudaStreamWaitEvent: not a live event");
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  return cudaEventCreateWithFlags(event, 0);
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  if (!event) return set_error(cudaErrorInvalidValue, "[event] cudaEventCreate: null result pointer");
  *event = new CUevent_st{current_device(), {}};
  (*event)->timing = !(flags & cudaEventDisableTiming);
  std::lock_guard lock(handles().mutex);
  handles().events.insert(*event);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  if (cudaError_t e = checked_stream(stream, "cudaEventRecord")) return e;
  if (!live_event(event))
    return set_error(cudaErrorInvalidResourceHandle, "[event] cudaEventRecord: not a live event");
  if (event->device != stream_device(stream))
    return set_error(cudaErrorInvalidResourceHandle,
                     "[event] cudaEventRecord: the event belongs to device " + std::to_string(event->device) +
                         ", the stream to device " + std::to_string(stream_device(stream)));
  event->time = std::chrono::steady_clock::now();
  event->recorded = true;
  note_event_record(event, stream);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  if (!live_event(event))
    return set_error(cudaErrorInvalidResourceHandle, "[event] cudaEventSynchronize: not a live event");
  note_event_sync(event);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t event) {
  if (!live_event(event))
    return set_error(cudaErrorInvalidResourceHandle, "[event] cudaEventQuery: not a live event");
  // Not an error (the last error stays): the device is as slow as stream order allows.
  return event_pending(event) ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (!ms) return set_error(cudaErrorInvalidValue, "[event] cudaEventElapsedTime: null result pointer");
  if (!live_event(start) || !live_event(end) || !start->recorded || !end->recorded || !start->timing ||
      !end->timing)
    return set_error(
        cudaErrorInvalidResourceHandle,
        "[event] cudaEventElapsedTime: both events must be live, recorded and created with timing");
  if (start->device != end->device)
    return set_error(cudaErrorInvalidResourceHandle,
                     "[event] cudaEventElapsedTime: the events belong to devices " +
                         std::to_string(start->device) + " and " + std::to_string(end->device));
  *ms = std::chrono::duration<float, std::milli>(end->time - start->time).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  {
    std::lock_guard lock(handles().mutex);
    if (handles().events.erase(event) == 1) {
      forget_event(event);
      delete event;
      return cudaSuccess;
    }
  }
  return set_error(cudaErrorInvalidResourceHandle, "[event] cudaEventDestroy: not a live event");
}

cudaError_t cudaDeviceSynchronize(void) {
  note_device_sync(current_device());
  return cudaSuccess;
}
cudaError_t cudaGetLastError(void) {
  const cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) {
  return last_error;
}
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (!func)
    return set_error(cudaErrorInvalidDeviceFunction, "[attribute] cudaFuncSetAttribute: null kernel");
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize:
      if (value < 0 || size_t(value) > kSharedOptinLimit)
        return set_error(cudaErrorInvalidValue, "[attribute] cudaFuncAttributeMaxDynamicSharedMemorySize " +
                                                    std::to_string(value) +
                                                    " outside 0..232448 (227 KiB, sm_90)");
      set_max_dynamic_smem(func, size_t(value));
      return cudaSuccess;
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return cudaSuccess;  // a hint
    default:
      return set_error(cudaErrorInvalidValue, "[attribute] cudaFuncSetAttribute: attribute " +
                                                  std::to_string(int(attr)) + " is not emulated");
  }
}
