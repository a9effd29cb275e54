#pragma once
// The one header every kernels/*.cu includes. The same source builds two ways:
//   nvcc (the GPU build)                       real CUDA: __shared__, <<<>>>, the device runtime;
//   g++ -x c++ -DDB_EMU=1 (the emulated build) the emulator in dreambooth/emu/, which runs each CUDA
//                                              thread as a fiber with true barriers, warp collectives,
//                                              poisoned memory and guard zones (docs/ARCHITECTURE.md).
// Kernel authors write ordinary CUDA C++ plus three macros:
//   DB_SHARED(type, name)       static shared memory (plain __shared__ does not compile under DB_EMU)
//   DB_DYNAMIC_SMEM(type, name) type* to the dynamic shared memory, 16-byte aligned
//   DB_LAUNCH(kernel, grid, block, smem_bytes, stream, args...) -> cudaError_t
// Template kernels go in parentheses: DB_LAUNCH((gn_fwd<8, true>), grid, block, 0, stream, x, y).
// Inline PTX lives only in cuda/ptx.cuh, behind wrappers with emulated twins.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#if defined(__CUDACC__)

// 16-byte aligned in both builds, so vector (float4) access to a shared array is portable.
#define DB_SHARED(type, name) __shared__ __align__(16)::std::type_identity_t<type> name
#define DB_DYNAMIC_SMEM(type, name)                                 \
  extern __shared__ __align__(16) unsigned char db_dynamic_smem_[]; \
  [[maybe_unused]] type* name = reinterpret_cast<type*>(db_dynamic_smem_)

namespace db {
// <<<>>> then cudaGetLastError(): configuration errors come back from the launch itself.
template <class... P, class... A>
cudaError_t cuda_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream,
                        A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A),
                "DB_LAUNCH: argument count differs from the kernel's parameters");
  kernel<<<grid, block, dynamic_smem, stream>>>(std::forward<A>(args)...);
  return cudaGetLastError();
}
}  // namespace db

#define DB_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ::db::cuda_launch(kernel, grid, block, smem_bytes, stream __VA_OPT__(, ) __VA_ARGS__)

#elif defined(DB_EMU)

#include "dreambooth/emu/builtins.h"
#include "dreambooth/emu/atomics.h"
#include "dreambooth/emu/intrinsics.h"
#include "dreambooth/emu/launch.h"
#include "dreambooth/emu/shared_memory.h"
#include "dreambooth/emu/sync.h"
#include "dreambooth/emu/warp.h"

#define DB_LAUNCH(kernel, grid, block, smem_bytes, stream, ...)                                  \
  ::db::emu::launch(kernel, #kernel, ::std::source_location::current(), grid, block, smem_bytes, \
                    stream __VA_OPT__(, ) __VA_ARGS__)

#else
#error "compat.cuh: compile with nvcc, or with g++ -x c++ -DDB_EMU=1 against the emulator (make test-kernels)"
#endif
