#pragma once
// Errors from the CUDA runtime, cuBLASLt and cuDNN become db::Error with the call and the reason.
#include <cuda_runtime_api.h>

#include "dreambooth/core/error.h"

namespace db::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear a non-sticky error so the next call reports its own
    throw Error("CUDA: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

}  // namespace db::cuda

#define DB_CUDA(call) ::db::cuda::check((call), #call)
