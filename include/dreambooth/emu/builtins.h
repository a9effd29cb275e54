#pragma once
// The CUDA language surface under emulation (g++ -DDB_EMU=1): execution-space keywords, the built-in
// index variables, and the storage classes the emulator refuses. Included by cuda/compat.cuh after the
// toolkit headers, which already define __global__/__device__/__host__/__forceinline__ as nothing or
// plain GNU attributes for a host compiler.
#include <cuda_runtime.h>

#include <cstdint>

// Kernels are ordinary functions here; launch bounds matter only to ptxas.
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

// Storage the emulator cannot see or poison. Plain __shared__ would be one static array shared by
// every block and every worker thread (stale data, races), so it does not compile: use DB_SHARED /
// DB_DYNAMIC_SMEM. __constant__ and __managed__ variables need cudaMemcpyToSymbol and friends, which
// are not emulated (use kernel parameters or device buffers).
// A _Pragma operand must stay one string literal: not reflowed.
// clang-format off
#undef __shared__
#define __shared__ _Pragma("GCC error \"plain __shared__ under DB_EMU: use DB_SHARED(type, name) or DB_DYNAMIC_SMEM\"")
#undef __constant__
#define __constant__ _Pragma("GCC error \"__constant__ is not emulated: pass the values as kernel parameters\"")
#undef __managed__
#define __managed__ _Pragma("GCC error \"__managed__ variables are not emulated: use cudaMallocManaged\"")
// clang-format on

namespace db::emu::detail {

// What a CUDA thread sees as built-in variables. One per emulated thread; the scheduler points
// tls_vars at the running thread's copy before resuming its fiber.
struct BuiltinVars {
  uint3 thread_idx;
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// Non-null exactly while a CUDA thread runs on this OS thread (fibers never migrate between OS threads).
extern constinit thread_local const BuiltinVars* tls_vars;

[[noreturn]] void called_outside_kernel(const char* what);

inline const BuiltinVars& vars(const char* what) {
  const BuiltinVars* v = tls_vars;
  if (!v) [[unlikely]]
    called_outside_kernel(what);
  return *v;
}

}  // namespace db::emu::detail

#define threadIdx (::db::emu::detail::vars("threadIdx").thread_idx)
#define blockIdx (::db::emu::detail::vars("blockIdx").block_idx)
#define blockDim (::db::emu::detail::vars("blockDim").block_dim)
#define gridDim (::db::emu::detail::vars("gridDim").grid_dim)
#define warpSize 32
