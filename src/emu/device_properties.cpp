// What the emulated device reports about itself: an honest name and sm_90 limits (the GPUs this
// project targets), so launchers that query limits size their grids and shared memory as on an H100.
#include <cuda_runtime.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "device_limits.h"
#include "dreambooth/emu/options.h"
#include "runtime_state.h"

using namespace db::emu::detail;

namespace {

size_t host_memory_bytes() {
  return size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

// -1 when the attribute is not modelled.
long long attribute_value(cudaDeviceAttr attr) {
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      return kMaxThreadsPerBlock;
    case cudaDevAttrMaxBlockDimX:
      return 1024;
    case cudaDevAttrMaxBlockDimY:
      return 1024;
    case cudaDevAttrMaxBlockDimZ:
      return 64;
    case cudaDevAttrMaxGridDimX:
      return 0x7FFFFFFF;
    case cudaDevAttrMaxGridDimY:
      return 65535;
    case cudaDevAttrMaxGridDimZ:
      return 65535;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      return kSharedStaticLimit;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      return kSharedOptinLimit;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      return kSharedPerMultiprocessor;
    case cudaDevAttrTotalConstantMemory:
      return 65536;
    case cudaDevAttrWarpSize:
      return 32;
    case cudaDevAttrMaxRegistersPerBlock:
      return 65536;
    case cudaDevAttrMaxRegistersPerMultiprocessor:
      return 65536;
    case cudaDevAttrMultiProcessorCount:
      return kMultiprocessors;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      return 2048;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      return 32;
    case cudaDevAttrComputeCapabilityMajor:
      return 9;
    case cudaDevAttrComputeCapabilityMinor:
      return 0;
    case cudaDevAttrL2CacheSize:
      return 50 << 20;
    case cudaDevAttrGlobalMemoryBusWidth:
      return 5120;
    case cudaDevAttrUnifiedAddressing:
      return 1;
    case cudaDevAttrManagedMemory:
      return 1;
    case cudaDevAttrConcurrentKernels:
      return 1;
    case cudaDevAttrMemoryPoolsSupported:
      return 1;
    case cudaDevAttrCanMapHostMemory:
      return 1;
    case cudaDevAttrIntegrated:
      return 0;
    case cudaDevAttrEccEnabled:
      return 0;
    case cudaDevAttrComputeMode:
      return cudaComputeModeDefault;
    default:
      return -1;
  }
}

}  // namespace

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (!prop) return set_error(cudaErrorInvalidValue, "[device] cudaGetDeviceProperties: null result pointer");
  if (cudaError_t e = checked_device(device, "device", "cudaGetDeviceProperties")) return e;
  std::memset(prop, 0, sizeof *prop);
  std::strncpy(prop->name, "dreambooth CPU emulator (sm_90 limits)", sizeof prop->name - 1);
  const size_t limit = db::emu::options().device_memory;
  prop->totalGlobalMem = limit ? limit : host_memory_bytes();
  prop->sharedMemPerBlock = kSharedStaticLimit;
  prop->sharedMemPerBlockOptin = kSharedOptinLimit;
  prop->sharedMemPerMultiprocessor = kSharedPerMultiprocessor;
  prop->regsPerBlock = 65536;
  prop->regsPerMultiprocessor = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = int(kMaxThreadsPerBlock);
  prop->maxThreadsDim[0] = 1024;
  prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7FFFFFFF;
  prop->maxGridSize[1] = 65535;
  prop->maxGridSize[2] = 65535;
  prop->totalConstMem = 65536;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = kMultiprocessors;
  prop->maxThreadsPerMultiProcessor = 2048;
  prop->maxBlocksPerMultiProcessor = 32;
  prop->l2CacheSize = 50 << 20;
  prop->memoryBusWidth = 5120;
  prop->unifiedAddressing = 1;
  prop->managedMemory = 1;
  prop->concurrentKernels = 1;
  prop->canMapHostMemory = 1;
  prop->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value) return set_error(cudaErrorInvalidValue, "[device] cudaDeviceGetAttribute: null result pointer");
  if (cudaError_t e = checked_device(device, "device", "cudaDeviceGetAttribute")) return e;
  const long long v = attribute_value(attr);
  if (v < 0)
    return set_error(cudaErrorInvalidValue, "[device] cudaDeviceGetAttribute: attribute " +
                                                std::to_string(int(attr)) + " is not emulated");
  *value = int(v);
  return cudaSuccess;
}
