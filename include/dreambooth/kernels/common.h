#pragma once
// Host launchers of the hand-written CUDA kernels (kernels/*.cu), the contract between the kernels and
// CudaOps (src/backend/cuda/). Plain C++ headers: CudaOps and the kernel tests include them in both
// builds (nvcc kernels + the CUDA runtime, or the emulator of DESIGN.md decision 11).
//
// Conventions, every launcher:
//   - raw device pointers; shapes as ints; NHWC feature maps are [B, N, C] with N = H*W;
//   - an element type `t` for activations, their gradients and working weights (ops.h's precision
//     contract): BF16 on a GPU, F32 too so each kernel is checked against the CPU reference at fp32
//     tolerance. Statistics, parameter gradients, losses and optimizer state are f32 (sums f64);
//   - gradients of parameters ACCUMULATE (+=) into f32 buffers; gradients of activations overwrite;
//     a null gradient pointer skips that gradient;
//   - reductions are deterministic: fixed-order partial sums, no float atomics. A launcher that needs
//     scratch memory has a `*_workspace(...)` size query; the caller passes that many bytes (or more);
//   - asynchronous on `stream`; returns the launch's cudaError_t (cudaErrorInvalidValue for arguments
//     the kernel does not support, before launching anything).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "dreambooth/core/dtype.h"

namespace db::kernels {

// Activations of the elementwise kernels (ops.h Activation, same order).
enum class Act : uint8_t { None, SiLU, GELU, QuickGELU };

}  // namespace db::kernels
