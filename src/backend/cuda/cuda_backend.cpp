// The CUDA backend's entry in the binaries it is linked into (backend/device.h): device discovery, the
// CudaOps factory and the toolchain self-check. Compiled by nvcc's host compiler for build/dreambooth and
// against the CUDA emulator (DB_EMU) for build/emu/dreambooth.
#include <cuda_runtime_api.h>

#include <utility>
#include <vector>

#include "cuda_ops.h"
#include "current_device.h"
#include "dreambooth/backend/cuda/philox_kernel.h"
#include "dreambooth/backend/device.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"

namespace db {
namespace {

int device_count(std::string* status) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (status)
      *status = err == cudaErrorInsufficientDriver
                    ? str_cat("no NVIDIA driver, or one older than the CUDA ", CUDART_VERSION / 1000,
                              " runtime this binary was built with")
                    : str_cat("cudaGetDeviceCount: ", cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  if (n == 0) {
    if (status) *status = "no CUDA devices";
    return 0;
  }
  if (status) {
    std::string names;
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp p{};
      if (cudaGetDeviceProperties(&p, i) == cudaSuccess)
        names += str_cat(i ? ", " : "", i, ": ", p.name, " (sm_", p.major, p.minor, ", ",
                         p.totalGlobalMem >> 20, " MiB)");
    }
    *status = names;
  }
  return n;
}

std::unique_ptr<Ops> make(int device) {
  return std::make_unique<cuda::CudaOps>(device);
}

bool self_check(std::string* report) {
  const uint64_t n = 4099;
  std::vector<uint32_t> got(n);
  std::string err;
  if (!cuda_philox_u32(1234, uint32_t(RngPurpose::Noise), 7, 3, got.data(), n, &err)) {
    *report = "FAILED (" + err + ")";
    return false;
  }
  PhiloxStream cpu(1234, RngPurpose::Noise, 7, 3);
  uint64_t bad = 0;
  for (uint64_t e = 0; e < n; ++e) bad += got[e] != cpu.u32(e);
  *report = str_cat("Philox stream on device 0 ", bad ? "DIFFERS from" : "equals", " the CPU's (", n - bad,
                    "/", n, " words)");
  return bad == 0;
}

// Both directions or neither; an access enabled earlier in this process counts.
bool enable_peer_access(int a, int b) {
  int ab = 0, ba = 0;
  DB_CUDA(cudaDeviceCanAccessPeer(&ab, a, b));
  DB_CUDA(cudaDeviceCanAccessPeer(&ba, b, a));
  if (!ab || !ba) return false;
  for (auto [from, to] : {std::pair{a, b}, std::pair{b, a}}) {
    cuda::use_device(from);
    const cudaError_t e = cudaDeviceEnablePeerAccess(to, 0);
    if (e == cudaErrorPeerAccessAlreadyEnabled)
      cudaGetLastError();
    else
      DB_CUDA(e);
  }
  return true;
}

}  // namespace

const CudaBackend* linked_cuda_backend() {
  static const CudaBackend backend {
#if DB_EMU
    true, "emulated on the CPU (a test build)",
#else
    false, "sm_80, sm_90a",
#endif
        device_count, make, self_check, enable_peer_access
  };
  return &backend;
}

}  // namespace db
