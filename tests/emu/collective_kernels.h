#pragma once
// Kernels that exercise every emulated primitive with a known answer (tests/emu/collective_kernels.cu).
// Plain C++ declarations: the same tests link against the emulator or, on a GPU, real CUDA.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace db::test_kernels {

// out[0..15] = expf, __expf, logf, __logf, rsqrtf, sqrtf, fmaxf(x,-x), fminf(x,-x), tanhf, erff,
// __fdividef(1,x), __frcp_rn, fmaf(x,x,1), max(x,2), min(x,2), bit round trip of x; bits[0..11] =
// __umulhi, min/max (int, unsigned), isfinite(inf), isfinite(x), __popc, __clz, __ffs, __brev,
// __byte_perm, __float2int_rn(2.5), __float2int_rn(-3.5).
cudaError_t intrinsics(float* out, unsigned* bits, float x);
// out[0..n) = -7 through a template kernel launched as DB_LAUNCH((fill_kernel<7, true>), ...).
cudaError_t fill_minus_seven(int* out, int n);
// out[b] = sum of x[256 b .. 256 b + 255]: tree reduction in static shared memory, one block of 256 each.
cudaError_t block_sum(const float* x, float* out, int blocks);
// One block of `threads`: out[0..2] = __syncthreads_count / _and / _or of (threadIdx.x % mod == 0).
cudaError_t barrier_reductions(int* out, int threads, int mod);
// One block of `threads`, var = 10 * tid + 1: out[k * threads + tid] is __shfl_sync (k = 0),
// __shfl_up_sync (1), __shfl_down_sync (2), __shfl_xor_sync (3) with lane/delta/mask b and width.
cudaError_t shuffles(int* out, int threads, int b, int width);
// One block of `threads`; lanes in `mask` call, the others write 0xDEAD: out[3 tid ..] = ballot of
// (lane % 4 == 0), __any_sync of (lane == 31), __all_sync of (lane % 2 == 0).
cudaError_t votes(unsigned* out, int threads, unsigned mask);
// One block of `threads`, v = lane * 3 - 40: out[6 tid ..] = __reduce_add/min/max_sync over int v, then
// over unsigned v + 100.
cudaError_t warp_reductions(int* out, int threads);
// One block of `threads`: each lane writes shared memory, __syncwarp, reads lane (lane + 1) % 32.
cudaError_t syncwarp_exchange(int* out, int threads);
// y = x through `smem_bytes` of dynamic shared memory (n_floats <= smem_bytes / 4), one block of 256.
cudaError_t dynamic_smem_copy(const float* x, float* y, int n_floats, size_t smem_bytes);
cudaError_t allow_dynamic_smem_copy(size_t bytes);  // cudaFuncSetAttribute on that kernel
// out[4 * (global linear thread) ..] = threadIdx (x, y, z) packed, blockIdx linear, blockDim, gridDim sums.
cudaError_t write_indices(uint32_t* out, dim3 grid, dim3 block);
// counters[0..6] updated by `blocks` blocks of `threads` (see the kernel for which atomic each is).
cudaError_t atomics(int* counters, int threads, int blocks);
// y[0..n) = x[0..n) tiled through shared memory with cp.async (4/8/16-byte and zero-filled tail forms);
// y[n..n_padded) = 0 from the zero fill. One block of 64 threads, n_padded = 256.
cudaError_t cp_async_copy(const float* x, float* y, int n);
// y[i] = bf16(x[i]) with 128-bit loads (float4) and bf16x2 stores, n % 4 == 0.
cudaError_t float4_to_bf16(const float* x, __nv_bfloat16* y, int n);
// One warp; lanes 0..15 read lane 20 with mask 0x0000ffff (outside the mask): out[lane] = the raw bits.
cudaError_t shuffle_outside_mask(unsigned* out);

}  // namespace db::test_kernels
