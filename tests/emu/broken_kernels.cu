// Deliberately broken kernels for the emulator's negative tests (declared in broken_kernels.h).
// Emulator only: several would hang or corrupt memory on a GPU, and one exceeds the static
// shared-memory limit that ptxas enforces at compile time.
#ifndef DB_EMU
#error "tests/emu/broken_kernels.cu is for the emulated build only"
#endif

#include "broken_kernels.h"
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/cuda/ptx.cuh"

namespace db::broken_kernels {
namespace {

__global__ void missing_barrier_kernel(const float* x, float* y, bool fixed) {
  DB_SHARED(float[128], tile);
  const unsigned t = threadIdx.x;
  tile[t] = x[t];
  if (fixed) __syncthreads();
  y[t] = tile[(t + 32) % 128];  // another warp's element
}

__global__ void early_return_kernel(float* y) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  y[threadIdx.x] = 1.f;
}

__global__ void barrier_sites_kernel(float* y) {
  if (threadIdx.x < 32)
    __syncthreads();
  else
    __syncthreads();
  y[threadIdx.x] = 1.f;
}

__global__ void shared_overrun_kernel(float* y) {
  DB_SHARED(float[64], tile);
  tile[threadIdx.x] = float(threadIdx.x);  // blockDim.x == 65
  __syncthreads();
  if (threadIdx.x < 64) y[threadIdx.x] = tile[threadIdx.x];
}

__global__ void global_overrun_kernel(float* y) {
  y[threadIdx.x] = 2.f;
}

__global__ void global_overread_kernel(const float* x, float* y, int n) {
  const float v = x[threadIdx.x];  // past the end for threadIdx.x >= n
  if (threadIdx.x < unsigned(n)) y[threadIdx.x] = v;
}

__global__ void shuffle_caller_outside_mask_kernel(int* y) {
  y[threadIdx.x] = __shfl_sync(0x0000ffffu, int(threadIdx.x), 0);
}

__global__ void shuffle_half_warp_exits_kernel(int* y) {
  const unsigned lane = threadIdx.x % 32;
  int v = int(lane);
  if (lane < 16) v += __shfl_xor_sync(0xffffffffu, v, 16);
  y[threadIdx.x] = v;
}

__global__ void shuffle_mask_mismatch_kernel(int* y) {
  const unsigned lane = threadIdx.x % 32;
  y[threadIdx.x] = __shfl_sync(lane < 16 ? 0x0000ffffu : 0xffffffffu, int(lane), 0);
  __syncwarp();
}

__global__ void shuffle_then_barrier_deadlock_kernel(int* y) {
  const unsigned lane = threadIdx.x % 32;
  int v = int(lane);
  if (lane < 16) v = __shfl_xor_sync(0xffffffffu, v, 16);
  __syncthreads();
  y[threadIdx.x] = v;
}

__global__ void cp_async_missing_wait_kernel(const float* x, float* y, bool fixed) {
  DB_SHARED(float[128], tile);
  const unsigned t = threadIdx.x;
  ptx::cp_async_ca<4>(&tile[t], x + t);
  ptx::cp_async_commit_group();
  if (fixed) ptx::cp_async_wait_all();
  __syncthreads();
  y[t] = tile[(t + 1) % 128];
}

__global__ void double_buffer_kernel(const float* x, float* y, int tiles, bool fixed) {
  DB_SHARED(float[2][128], buf);
  const unsigned t = threadIdx.x;
  ptx::cp_async_ca<4>(&buf[0][t], x + t);
  ptx::cp_async_commit_group();
  float acc = 0.f;
  for (int k = 0; k < tiles; ++k) {
    if (k + 1 < tiles) ptx::cp_async_ca<4>(&buf[(k + 1) % 2][t], x + (k + 1) * 128 + t);
    ptx::cp_async_commit_group();
    ptx::cp_async_wait_group<1>();  // this thread's copies of tile k have landed
    __syncthreads();                // ... and every other thread's
    acc += buf[k % 2][(t + 1) % 128];
    if (fixed) __syncthreads();  // all reads of buf[k % 2] done before iteration k + 1 refills it
  }
  y[t] = acc;
}

__global__ void empty_kernel() {
  DB_DYNAMIC_SMEM(float, unused);
  (void)unused;
}

__global__ void static_smem_over_limit_kernel(float* y) {
  DB_SHARED(float[12289], big);
  big[threadIdx.x] = 1.f;
  y[threadIdx.x] = big[threadIdx.x];
}

__global__ void ldmatrix_bad_address_kernel(uint32_t* y, const uint32_t* global_rows, bool in_global) {
  DB_SHARED(uint32_t[8][8], rows);
  const unsigned lane = threadIdx.x;
  for (unsigned i = lane; i < 64; i += 32) rows[i / 8][i % 8] = i;
  __syncwarp();
  uint32_t r[1];
  if (in_global)
    ptx::ldmatrix_x1(r, global_rows + 4 * (lane % 8));
  else
    ptx::ldmatrix_x1(r, reinterpret_cast<const char*>(&rows[lane % 8][0]) + 2);
  y[lane] = r[0];
}

__global__ void mma_half_warp_kernel(float* y) {
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  const float c[4] = {0.f, 0.f, 0.f, 0.f};
  float d[4];
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  y[threadIdx.x] = d[0];
}

__global__ void cp_async_source_kernel(const float* x, float* y, int offset) {
  DB_SHARED(float[4], tile);
  if (threadIdx.x == 0) ptx::cp_async_cg(tile, x + offset);
  ptx::cp_async_wait_all();
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x % 4];
}

__global__ void trap_kernel(float* y) {
  if (threadIdx.x == 3) __trap();
  y[threadIdx.x] = 0.f;
}

}  // namespace

cudaError_t missing_barrier(const float* x, float* y, bool fixed) {
  return DB_LAUNCH(missing_barrier_kernel, dim3(1), dim3(128), 0, nullptr, x, y, fixed);
}
cudaError_t early_return(float* y) {
  return DB_LAUNCH(early_return_kernel, dim3(1), dim3(64), 0, nullptr, y);
}
cudaError_t barrier_sites(float* y) {
  return DB_LAUNCH(barrier_sites_kernel, dim3(1), dim3(64), 0, nullptr, y);
}
cudaError_t shared_overrun(float* y) {
  return DB_LAUNCH(shared_overrun_kernel, dim3(1), dim3(65), 0, nullptr, y);
}
cudaError_t global_overrun(float* y, int n) {
  return DB_LAUNCH(global_overrun_kernel, dim3(1), dim3(n + 1), 0, nullptr, y);
}
cudaError_t global_overread(const float* x, float* y, int n) {
  return DB_LAUNCH(global_overread_kernel, dim3(1), dim3(64), 0, nullptr, x, y, n);
}
cudaError_t shuffle_caller_outside_mask(int* y) {
  return DB_LAUNCH(shuffle_caller_outside_mask_kernel, dim3(1), dim3(32), 0, nullptr, y);
}
cudaError_t shuffle_half_warp_exits(int* y) {
  return DB_LAUNCH(shuffle_half_warp_exits_kernel, dim3(1), dim3(32), 0, nullptr, y);
}
cudaError_t shuffle_mask_mismatch(int* y) {
  return DB_LAUNCH(shuffle_mask_mismatch_kernel, dim3(1), dim3(32), 0, nullptr, y);
}
cudaError_t shuffle_then_barrier_deadlock(int* y) {
  return DB_LAUNCH(shuffle_then_barrier_deadlock_kernel, dim3(1), dim3(64), 0, nullptr, y);
}
cudaError_t cp_async_missing_wait(const float* x, float* y, bool fixed) {
  return DB_LAUNCH(cp_async_missing_wait_kernel, dim3(1), dim3(128), 0, nullptr, x, y, fixed);
}
cudaError_t double_buffer(const float* x, float* y, int tiles, bool fixed) {
  return DB_LAUNCH(double_buffer_kernel, dim3(1), dim3(128), 0, nullptr, x, y, tiles, fixed);
}
cudaError_t empty(dim3 grid, dim3 block, size_t dynamic_smem) {
  return DB_LAUNCH(empty_kernel, grid, block, dynamic_smem, nullptr);
}
cudaError_t allow_empty_dynamic_smem(int bytes) {
  return cudaFuncSetAttribute(empty_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
cudaError_t static_smem_over_limit(float* y) {
  return DB_LAUNCH(static_smem_over_limit_kernel, dim3(1), dim3(32), 0, nullptr, y);
}
cudaError_t ldmatrix_bad_address(uint32_t* y, const uint32_t* global_rows, bool in_global) {
  return DB_LAUNCH(ldmatrix_bad_address_kernel, dim3(1), dim3(32), 0, nullptr, y, global_rows, in_global);
}
cudaError_t mma_half_warp(float* y) {
  return DB_LAUNCH(mma_half_warp_kernel, dim3(1), dim3(16), 0, nullptr, y);
}
cudaError_t cp_async_source(const float* x, float* y, int offset) {
  return DB_LAUNCH(cp_async_source_kernel, dim3(1), dim3(32), 0, nullptr, x, y, offset);
}
cudaError_t trap(float* y) {
  return DB_LAUNCH(trap_kernel, dim3(1), dim3(32), 0, nullptr, y);
}

}  // namespace db::broken_kernels
