#pragma once
// Runtime-API state shared between the API functions and the launcher: the calling thread's last
// error, the stream table, the current device and peer access, and per-kernel attributes.
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace db::emu::detail {

// Records `message` as last_violation() and `error` as the thread's last error; returns `error`.
cudaError_t set_error(cudaError_t error, const std::string& message);
void set_last_error(cudaError_t error);

bool valid_stream(cudaStream_t s);  // 0, the legacy/per-thread handles, or a live created stream
// The device a valid stream belongs to (the special handles: the calling thread's current device).
int stream_device(cudaStream_t s);

int current_device();  // the calling thread's (cudaSetDevice; 0 until set)
// cudaErrorInvalidDevice with "[tag] api: device N does not exist (DB_EMU_DEVICES=M)" unless it does.
cudaError_t checked_device(int device, const char* tag, const char* api);
// Whether kernels on `from` may touch `to`'s memory: the same device, or peer access enabled.
bool peer_enabled(int from, int to);

// cudaFuncAttributeMaxDynamicSharedMemorySize per kernel (48 KiB unless raised).
void set_max_dynamic_smem(const void* kernel, size_t bytes);
size_t max_dynamic_smem(const void* kernel);

}  // namespace db::emu::detail
