#pragma once
// Runtime-API state shared between the API functions and the launcher: the calling thread's last
// error, the stream table, and per-kernel attributes.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace db::emu::detail {

// Records `message` as last_violation() and `error` as the thread's last error; returns `error`.
cudaError_t set_error(cudaError_t error, const std::string& message);
void set_last_error(cudaError_t error);

bool valid_stream(cudaStream_t s);  // 0, the legacy/per-thread handles, or a live created stream

// cudaFuncAttributeMaxDynamicSharedMemorySize per kernel (48 KiB unless raised).
void set_max_dynamic_smem(const void* kernel, size_t bytes);
size_t max_dynamic_smem(const void* kernel);

}  // namespace db::emu::detail
