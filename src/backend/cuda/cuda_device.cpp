// Built only with CUDA=1: asks the CUDA runtime for devices without failing when there is no driver.
#include <cuda_runtime.h>

#include "dreambooth/backend/device.h"
#include "dreambooth/core/error.h"

namespace db {

int cuda_device_count(std::string* status) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (status) *status = str_cat("cudaGetDeviceCount: ", cudaGetErrorString(err));
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

}  // namespace db
