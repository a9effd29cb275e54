#pragma once
// The emulated build's library stand-ins (gemm_emu.cpp, conv_emu.cpp) run the CPU reference on the
// emulated device memory: copy a device buffer to a host f32 tensor (converting bf16/f16), and back.
#include <cuda_runtime_api.h>

#include "dreambooth/core/tensor.h"

namespace db::cuda {

// Synchronises `stream`, then copies `n` elements of type `t` at device `src` into a host f32 tensor of
// `shape`.
Tensor download_f32(const void* src, DType t, const Shape& shape, cudaStream_t stream);
// Converts host f32 `src` to `t` (round to nearest even) and copies it to device `dst` (synchronously).
void upload_from_f32(const Tensor& src, DType t, void* dst, cudaStream_t stream);

}  // namespace db::cuda
