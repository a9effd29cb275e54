#pragma once
// The calling thread's current device as this backend last set it. Every device switch in the backend
// goes through use_device, so an entry point of a CudaOps whose device is already current costs one
// thread-local compare, and two CudaOps (two GPUs) used from one thread each switch only when needed.
#include "cuda_check.h"

namespace db::cuda {

namespace detail {
inline thread_local int current_device = -1;
}

inline void use_device(int device) {
  if (detail::current_device == device) return;
  DB_CUDA(cudaSetDevice(device));
  detail::current_device = device;
}

}  // namespace db::cuda
