#pragma once
// Deliberately broken kernels (tests/emu/broken_kernels.cu), one per bug class the emulator must
// report; most have a `fixed` switch so the same kernel, corrected, shows the failure is the bug's.
// Emulator only: on a GPU several of them would hang or corrupt memory.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace db::broken_kernels {

// One block of 128: y[t] = tile[(t + 32) % 128] after every thread stored x[t] in tile, with or
// without the __syncthreads between the stores and the loads.
cudaError_t missing_barrier(const float* x, float* y, bool fixed);
// One block of 64; thread 5 returns before a __syncthreads the others wait at.
cudaError_t early_return(float* y);
// One block of 64; warp 0 waits at one __syncthreads call site, warp 1 at another.
cudaError_t barrier_sites(float* y);
// One block of 65 writing a float[64] shared array at threadIdx.x (thread 64 writes past it).
cudaError_t shared_overrun(float* y);
// One block of n + 1 writing y[threadIdx.x] (one past the end of an n-element allocation).
cudaError_t global_overrun(float* y, int n);
// One block of 64 reading x[threadIdx.x] for an n-element x (n < 64): reads past the allocation.
cudaError_t global_overread(const float* x, float* y, int n);
// One warp: every lane calls __shfl_sync with mask 0x0000ffff (lanes 16..31 are not in it).
cudaError_t shuffle_caller_outside_mask(int* y);
// One warp: lanes 0..15 shuffle with the full mask, lanes 16..31 skip it and exit.
cudaError_t shuffle_half_warp_exits(int* y);
// One warp: lanes 0..15 shuffle with mask 0x0000ffff, lanes 16..31 with 0xffffffff; then __syncwarp().
cudaError_t shuffle_mask_mismatch(int* y);
// One block of 64: lanes 0..15 of each warp shuffle with the full mask, the rest go to __syncthreads.
cudaError_t shuffle_then_barrier_deadlock(int* y);
// One block of 128: cp.async x into shared memory, commit, then (unless fixed) no wait before the
// __syncthreads and the reads: y[t] = tile[(t + 1) % 128].
cudaError_t cp_async_missing_wait(const float* x, float* y, bool fixed);
// One block of 128, `tiles` tiles of 128 floats double-buffered with cp.async:
// y[t] = sum_k tile_k[(t + 1) % 128]; without (fixed = false) the trailing __syncthreads that keeps a
// buffer from being refilled while other threads still read it.
cudaError_t double_buffer(const float* x, float* y, int tiles, bool fixed);
// An empty kernel (uses dynamic shared memory) with the given configuration.
cudaError_t empty(dim3 grid, dim3 block, size_t dynamic_smem);
cudaError_t allow_empty_dynamic_smem(int bytes);  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
// A DB_SHARED float[12289]: 49156 bytes of static shared memory, over the 48 KiB limit.
cudaError_t static_smem_over_limit(float* y);
// ldmatrix_x1 with lane rows 2 bytes off 16-byte alignment (`in_global`: rows in global memory instead).
cudaError_t ldmatrix_bad_address(uint32_t* y, const uint32_t* global_rows, bool in_global);
// mma.m16n8k16 by a block of 16 threads (half a warp).
cudaError_t mma_half_warp(float* y);
// cp.async from x + offset for 16 bytes (x has n floats).
cudaError_t cp_async_source(const float* x, float* y, int offset);
// Thread 3 calls __trap().
cudaError_t trap(float* y);

}  // namespace db::broken_kernels
