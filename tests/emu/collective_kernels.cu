// Known-answer kernels for the emulator's primitives (declared in collective_kernels.h). They use only
// the compat API, so they build with nvcc too.
#include "collective_kernels.h"
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/cuda/ptx.cuh"

namespace db::test_kernels {
namespace {

__global__ void block_sum_kernel(const float* x, float* out) {
  DB_SHARED(float[256], partial);
  const unsigned t = threadIdx.x;
  partial[t] = x[blockIdx.x * 256 + t];
  __syncthreads();
  for (unsigned stride = 128; stride > 0; stride /= 2) {
    if (t < stride) partial[t] += partial[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = partial[0];
}

__global__ void barrier_reductions_kernel(int* out, int mod) {
  const int p = threadIdx.x % mod == 0;
  const int count = __syncthreads_count(p);
  const int all = __syncthreads_and(p);
  const int any = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[0] = count;
    out[1] = all;
    out[2] = any;
  }
}

__global__ void shuffles_kernel(int* out, int b, int width) {
  const int t = threadIdx.x, n = blockDim.x;
  const int v = 10 * t + 1;
  out[0 * n + t] = __shfl_sync(0xffffffffu, v, b, width);
  out[1 * n + t] = __shfl_up_sync(0xffffffffu, v, unsigned(b), width);
  out[2 * n + t] = __shfl_down_sync(0xffffffffu, v, unsigned(b), width);
  out[3 * n + t] = __shfl_xor_sync(0xffffffffu, v, b, width);
}

__global__ void votes_kernel(unsigned* out, unsigned mask) {
  const unsigned t = threadIdx.x, lane = t % 32;
  if (!(mask >> lane & 1)) {
    out[3 * t] = out[3 * t + 1] = out[3 * t + 2] = 0xDEADu;
    return;
  }
  out[3 * t] = __ballot_sync(mask, lane % 4 == 0);
  out[3 * t + 1] = unsigned(__any_sync(mask, lane == 31));
  out[3 * t + 2] = unsigned(__all_sync(mask, lane % 2 == 0));
}

__global__ void warp_reductions_kernel(int* out) {
  const int t = threadIdx.x, lane = t % 32;
  const int v = lane * 3 - 40;
  const unsigned u = unsigned(v + 100);
  out[6 * t + 0] = __reduce_add_sync(0xffffffffu, v);
  out[6 * t + 1] = __reduce_min_sync(0xffffffffu, v);
  out[6 * t + 2] = __reduce_max_sync(0xffffffffu, v);
  out[6 * t + 3] = int(__reduce_add_sync(0xffffffffu, u));
  out[6 * t + 4] = int(__reduce_min_sync(0xffffffffu, u));
  out[6 * t + 5] = int(__reduce_max_sync(0xffffffffu, u));
}

__global__ void syncwarp_exchange_kernel(int* out) {
  DB_SHARED(int[1024], slots);
  const unsigned t = threadIdx.x, lane = t % 32, base = t - lane;
  slots[t] = int(7 * t);
  __syncwarp();
  out[t] = slots[base + (lane + 1) % 32];
}

__global__ void dynamic_smem_copy_kernel(const float* x, float* y, int n) {
  DB_DYNAMIC_SMEM(float, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = x[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = buf[n - 1 - i];
}

__global__ void write_indices_kernel(uint32_t* out) {
  const uint32_t block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const uint32_t in_block = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  const uint32_t g = block * (blockDim.x * blockDim.y * blockDim.z) + in_block;
  out[4 * g + 0] = threadIdx.x | threadIdx.y << 10 | threadIdx.z << 20;
  out[4 * g + 1] = block;
  out[4 * g + 2] = blockDim.x + blockDim.y + blockDim.z;
  out[4 * g + 3] = gridDim.x + gridDim.y + gridDim.z;
}

// counters: [0] atomicAdd, [1] atomicMax, [2] atomicMin, [3] atomicCAS increments, [4] atomicExch
// (last writer's value is some thread id), [5] per-block shared counters summed, [6] atomicInc mod 7.
__global__ void atomics_kernel(int* counters) {
  DB_SHARED(int, block_count);
  const int id = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (threadIdx.x == 0) block_count = 0;
  __syncthreads();
  atomicAdd(&counters[0], 1);
  atomicMax(&counters[1], id);
  atomicMin(&counters[2], id);
  int old = counters[3], seen;
  while ((seen = atomicCAS(&counters[3], old, old + 1)) != old) old = seen;
  atomicExch(&counters[4], id);
  atomicAdd(&block_count, 2);
  atomicInc(reinterpret_cast<unsigned*>(&counters[6]), 6u);
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&counters[5], block_count);
}

// 64 threads copy 256 floats: elements [0, 64) with 4-byte, [64, 128) 8-byte, [128, 256) 16-byte
// copies; copies past n are zero-filled (src-size form) with a clamped, valid source address.
__global__ void cp_async_copy_kernel(const float* x, float* y, int n) {
  DB_SHARED(float[256], tile);
  const int t = threadIdx.x;
  auto valid_bytes = [n](int first, int count) {
    const int v = n - first;
    return 4 * (v < 0 ? 0 : (v > count ? count : v));
  };
  ptx::cp_async_ca_zfill<4>(&tile[t], x + (t < n ? t : 0), valid_bytes(t, 1));
  ptx::cp_async_commit_group();
  const int e8 = 64 + 2 * (t % 32);
  if (t < 32) ptx::cp_async_ca_zfill<8>(&tile[e8], x + (e8 < n ? e8 : 0), valid_bytes(e8, 2));
  ptx::cp_async_commit_group();
  const int e16 = 128 + 4 * (t % 32);
  if (t < 32) ptx::cp_async_cg_zfill(&tile[e16], x + (e16 < n ? e16 : 0), valid_bytes(e16, 4));
  ptx::cp_async_commit_group();
  ptx::cp_async_wait_group<0>();
  __syncthreads();
  for (int i = t; i < 256; i += 64) y[i] = tile[i];
}

__global__ void float4_to_bf16_kernel(const float* x, __nv_bfloat16* y, int n) {
  const int i = 4 * int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const float4 v = *reinterpret_cast<const float4*>(x + i);
  __nv_bfloat162* out = reinterpret_cast<__nv_bfloat162*>(y + i);
  out[0] = __floats2bfloat162_rn(v.x, v.y);
  out[1] = __floats2bfloat162_rn(v.z, v.w);
}

__global__ void shuffle_outside_mask_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32;
  if (lane < 16)
    out[lane] = __float_as_uint(__shfl_sync(0x0000ffffu, 1.5f, 20));
  else
    out[lane] = 0;
}

// out[0..15]: float functions of x = 0.75 (f32 intrinsics as kernels use them); bits[0..11]: integer
// intrinsics and predicates on fixed inputs.
__global__ void intrinsics_kernel(float* out, unsigned* bits, float x) {
  if (threadIdx.x != 0) return;
  out[0] = expf(x);
  out[1] = __expf(x);
  out[2] = logf(x);
  out[3] = __logf(x);
  out[4] = rsqrtf(x);
  out[5] = sqrtf(x);
  out[6] = fmaxf(x, -x);
  out[7] = fminf(x, -x);
  out[8] = tanhf(x);
  out[9] = erff(x);
  out[10] = __fdividef(1.f, x);
  out[11] = __frcp_rn(x);
  out[12] = fmaf(x, x, 1.f);
  out[13] = max(x, 2.f);
  out[14] = min(x, 2.f);
  out[15] = __uint_as_float(__float_as_uint(x));
  bits[0] = __umulhi(0xDEADBEEFu, 0x12345678u);
  bits[1] = unsigned(min(-3, 5));
  bits[2] = max(7u, 9u);
  bits[3] = unsigned(isfinite(__int_as_float(0x7f800000)));  // +inf
  bits[4] = unsigned(isfinite(x));
  bits[5] = unsigned(__popc(0xF0F0u));
  bits[6] = unsigned(__clz(1));
  bits[7] = unsigned(__ffs(8));
  bits[8] = __brev(1u);
  bits[9] = __byte_perm(0x33221100u, 0x77665544u, 0x5140u);
  bits[10] = unsigned(__float2int_rn(2.5f));
  bits[11] = unsigned(__float2int_rn(-3.5f));
}

template <int V, bool Negate>
__global__ void fill_kernel(int* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = Negate ? -V : V;
}

}  // namespace

cudaError_t intrinsics(float* out, unsigned* bits, float x) {
  return DB_LAUNCH(intrinsics_kernel, dim3(1), dim3(32), 0, nullptr, out, bits, x);
}
cudaError_t fill_minus_seven(int* out, int n) {
  return DB_LAUNCH((fill_kernel<7, true>), dim3((n + 127) / 128), dim3(128), 0, nullptr, out, n);
}
cudaError_t block_sum(const float* x, float* out, int blocks) {
  return DB_LAUNCH(block_sum_kernel, dim3(blocks), dim3(256), 0, nullptr, x, out);
}
cudaError_t barrier_reductions(int* out, int threads, int mod) {
  return DB_LAUNCH(barrier_reductions_kernel, dim3(1), dim3(threads), 0, nullptr, out, mod);
}
cudaError_t shuffles(int* out, int threads, int b, int width) {
  return DB_LAUNCH(shuffles_kernel, dim3(1), dim3(threads), 0, nullptr, out, b, width);
}
cudaError_t votes(unsigned* out, int threads, unsigned mask) {
  return DB_LAUNCH(votes_kernel, dim3(1), dim3(threads), 0, nullptr, out, mask);
}
cudaError_t warp_reductions(int* out, int threads) {
  return DB_LAUNCH(warp_reductions_kernel, dim3(1), dim3(threads), 0, nullptr, out);
}
cudaError_t syncwarp_exchange(int* out, int threads) {
  return DB_LAUNCH(syncwarp_exchange_kernel, dim3(1), dim3(threads), 0, nullptr, out);
}
cudaError_t dynamic_smem_copy(const float* x, float* y, int n_floats, size_t smem_bytes) {
  return DB_LAUNCH(dynamic_smem_copy_kernel, dim3(1), dim3(256), smem_bytes, nullptr, x, y, n_floats);
}
cudaError_t allow_dynamic_smem_copy(size_t bytes) {
  return cudaFuncSetAttribute(dynamic_smem_copy_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              int(bytes));
}
cudaError_t write_indices(uint32_t* out, dim3 grid, dim3 block) {
  return DB_LAUNCH(write_indices_kernel, grid, block, 0, nullptr, out);
}
cudaError_t atomics(int* counters, int threads, int blocks) {
  return DB_LAUNCH(atomics_kernel, dim3(blocks), dim3(threads), 0, nullptr, counters);
}
cudaError_t cp_async_copy(const float* x, float* y, int n) {
  return DB_LAUNCH(cp_async_copy_kernel, dim3(1), dim3(64), 0, nullptr, x, y, n);
}
cudaError_t float4_to_bf16(const float* x, __nv_bfloat16* y, int n) {
  return DB_LAUNCH(float4_to_bf16_kernel, dim3((n / 4 + 63) / 64), dim3(64), 0, nullptr, x, y, n);
}
cudaError_t shuffle_outside_mask(unsigned* out) {
  return DB_LAUNCH(shuffle_outside_mask_kernel, dim3(1), dim3(32), 0, nullptr, out);
}

}  // namespace db::test_kernels
