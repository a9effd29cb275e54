// Layer norm over the last dim of x [M, C] (include/dreambooth/kernels/norm.h; semantics of
// CpuOps::layer_norm_forward/backward).
//
// Forward: one warp per row, 8 rows per 256-thread block. A lane merges (count, mean, M2) of the packs
// it reads (16-byte loads when C and the pointers allow, else narrower), a fixed shuffle tree gives the
// row's statistics, a second pass (the row again, from L1/L2) writes y = (x - mean) rstd gamma + beta.
// No shared memory, no barrier: SD's rows (C = 320..1280, CLIP 768/1024) are 1.3-5 KiB.
// Backward, dx: one warp per row, sums of dy gamma and dy gamma xhat by a butterfly (every lane the
// same bits), then dx = rstd (dy gamma - m1 - xhat m2).
// Backward, dgamma/dbeta: grid (channel tiles, row chunks), block (32, 8): a thread owns V channels
// and walks its slice of the chunk's rows; slices summed in order in shared memory -> part
// [chunks, 2, C] in the workspace; then one thread per channel sums the chunks in order and ADDS
// to dbeta/dgamma (no float atomics).
//
// ptxas (sm_90a, CUDA 13.0), over the T x V instantiations, no spills: forward 30-46 registers, dx
// 32-48, partials 31-40 with 2-16 KiB shared, column sums 32.
#include <algorithm>

#include "dreambooth/kernels/norm.h"
#include "norm_common.cuh"

namespace db::kernels {
namespace {

using norm::kSliceRows;
using norm::Stats;

constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kMinChunkRows = 64;

// x, y [M, C]; mean, rstd [M]. grid ceil(M / 8), block 256.
template <class T, int V>
__global__ void __launch_bounds__(256)
    ln_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                      T* __restrict__ y, float* mean, float* rstd, int64_t M, int C, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= M) return;
  const T* xr = x + row * C;
  const int cv = C / V;
  Stats s{0.f, 0.f, 0.f};
  for (int j = lane; j < cv; j += 32) {
    float v[V];
    norm::load<T, V>(xr + j * V, v);
    s = norm::merge(s, norm::pack_stats<V>(v));
  }
  s = norm::warp_reduce(s);
  const float m = __shfl_sync(0xffffffffu, s.mean, 0);
  const float r = 1.f / sqrtf(__shfl_sync(0xffffffffu, s.m2, 0) / float(C) + eps);
  if (lane == 0) {
    if (mean) mean[row] = m;
    if (rstd) rstd[row] = r;
  }
  T* yr = y + row * C;
  for (int j = lane; j < cv; j += 32) {
    float v[V], ga[V], be[V];
    norm::load<T, V>(xr + j * V, v);
    norm::load<T, V>(gamma + j * V, ga);
    norm::load<T, V>(beta + j * V, be);
#pragma unroll
    for (int k = 0; k < V; ++k) v[k] = (v[k] - m) * r * ga[k] + be[k];
    norm::store<T, V>(yr + j * V, v);
  }
}

// dx [M, C] = rstd (dy gamma - m1 - xhat m2), m1, m2 the row means of dy gamma and dy gamma xhat.
template <class T, int V>
__global__ void __launch_bounds__(256)
    ln_backward_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                          const float* __restrict__ mean, const float* __restrict__ rstd, T* __restrict__ dx,
                          int64_t M, int C) {
  const int lane = threadIdx.x & 31;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerBlock + (threadIdx.x >> 5);
  if (row >= M) return;
  const T* xr = x + row * C;
  const T* dyr = dy + row * C;
  const float m = mean[row], r = rstd[row];
  const int cv = C / V;
  float a1 = 0.f, a2 = 0.f;
  for (int j = lane; j < cv; j += 32) {
    float xv[V], dv[V], ga[V];
    norm::load<T, V>(xr + j * V, xv);
    norm::load<T, V>(dyr + j * V, dv);
    norm::load<T, V>(gamma + j * V, ga);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float d = dv[k] * ga[k];
      a1 += d;
      a2 += d * ((xv[k] - m) * r);
    }
  }
  const float m1 = norm::warp_sum(a1) / float(C), m2 = norm::warp_sum(a2) / float(C);
  T* dxr = dx + row * C;
  for (int j = lane; j < cv; j += 32) {
    float xv[V], dv[V], ga[V];
    norm::load<T, V>(xr + j * V, xv);
    norm::load<T, V>(dyr + j * V, dv);
    norm::load<T, V>(gamma + j * V, ga);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - m) * r;
      xv[k] = r * (dv[k] * ga[k] - m1 - xhat * m2);
    }
    norm::store<T, V>(dxr + j * V, xv);
  }
}

// part [chunks, 2, C]: sums over the chunk's rows of dy (-> dbeta) and dy xhat (-> dgamma).
// grid (tiles, chunks), block (32, <= kSliceRows).
template <class T, int V>
__global__ void __launch_bounds__(256)
    ln_backward_partials_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                float* __restrict__ part, int64_t M, int C, int chunk_rows) {
  DB_SHARED(float[2][kSliceRows][32 * V], red);
  const int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
  const bool active = c0 < C;
  float s1[V] = {}, s2[V] = {};
  if (active) {
    const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
    const int64_t r1 = r0 + chunk_rows < M ? r0 + chunk_rows : M;
    for (int64_t n = r0 + threadIdx.y; n < r1; n += blockDim.y) {
      const float m = mean[n], r = rstd[n];
      float xv[V], dv[V];
      norm::load<T, V>(x + n * C + c0, xv);
      norm::load<T, V>(dy + n * C + c0, dv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        s1[i] += dv[i];
        s2[i] += dv[i] * ((xv[i] - m) * r);
      }
    }
  }
  float* out = part + int64_t(blockIdx.y) * 2 * C;
  norm::slice_reduce_store<V>(red, s1, s2, out, out + C, c0, active);
}

// Column sums of per-chunk partials, one thread per channel, chunks in order:
// out0[c] += sum_k part[k][0][c], out1[c] += sum_k part[k][1][c] (either out may be null).
// part [chunks, 2, C]
__global__ void __launch_bounds__(256)
    column_sums_kernel(const float* __restrict__ part, float* out0, float* out1, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s0 = 0.f, s1 = 0.f;
  for (int k = 0; k < chunks; ++k) {
    s0 += part[(int64_t(k) * 2) * C + c];
    s1 += part[(int64_t(k) * 2 + 1) * C + c];
  }
  if (out0) out0[c] += s0;
  if (out1) out1[c] += s1;
}

// Rows per chunk of the dgamma/dbeta grid: 64, doubled until the chunks fit gridDim.y.
int chunk_rows(int64_t M) {
  int rows = kMinChunkRows;
  while ((M + rows - 1) / rows > 65535) rows *= 2;
  return rows;
}

}  // namespace

cudaError_t layer_norm_forward(DType t, const void* x, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int64_t M, int C, float eps, cudaStream_t stream) {
  if (M < 1 || C < 1 || !x || !gamma || !beta || !y) return cudaErrorInvalidValue;
  const int64_t blocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  return norm::with_type(t, [&](auto tag) {
    using T = decltype(tag);
    return norm::with_vec<T>(norm::pick_vec<T>(C, {x, y, gamma, beta}), [&](auto vc) {
      constexpr int V = decltype(vc)::value;
      return DB_LAUNCH((ln_forward_kernel<T, V>), dim3(unsigned(blocks)), dim3(32 * kRowsPerBlock), 0, stream,
                       static_cast<const T*>(x), static_cast<const T*>(gamma), static_cast<const T*>(beta),
                       static_cast<T*>(y), mean, rstd, M, C, eps);
    });
  });
}

size_t layer_norm_backward_workspace(int64_t M, int C) {
  if (M < 1 || C < 1) return 0;
  return size_t((M + chunk_rows(M) - 1) / chunk_rows(M)) * 2 * size_t(C) * sizeof(float);
}

cudaError_t layer_norm_backward(DType t, const void* dy, const void* x, const void* gamma, const float* mean,
                                const float* rstd, void* dx, float* dgamma, float* dbeta, int64_t M, int C,
                                void* workspace, cudaStream_t stream) {
  if (M < 1 || C < 1 || !dy || !x || !gamma || !mean || !rstd) return cudaErrorInvalidValue;
  const int64_t blocks = (M + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 0x7fffffff || ((dgamma || dbeta) && !workspace)) return cudaErrorInvalidValue;
  return norm::with_type(t, [&](auto tag) {
    using T = decltype(tag);
    return norm::with_vec<T>(norm::pick_vec<T>(C, {dy, x, dx, gamma}), [&](auto vc) -> cudaError_t {
      constexpr int V = decltype(vc)::value;
      const auto* dyp = static_cast<const T*>(dy);
      const auto* xp = static_cast<const T*>(x);
      if (dx) {
        const cudaError_t err =
            DB_LAUNCH((ln_backward_dx_kernel<T, V>), dim3(unsigned(blocks)), dim3(32 * kRowsPerBlock), 0,
                      stream, dyp, xp, static_cast<const T*>(gamma), mean, rstd, static_cast<T*>(dx), M, C);
        if (err != cudaSuccess) return err;
      }
      if (!dgamma && !dbeta) return cudaSuccess;
      const int rows = chunk_rows(M);
      const int chunks = int((M + rows - 1) / rows);
      float* part = static_cast<float*>(workspace);
      const cudaError_t err =
          DB_LAUNCH((ln_backward_partials_kernel<T, V>), dim3(unsigned((C / V + 31) / 32), unsigned(chunks)),
                    dim3(32, unsigned(std::min<int64_t>(M, kSliceRows))), 0, stream, dyp, xp, mean, rstd,
                    part, M, C, rows);
      if (err != cudaSuccess) return err;
      return DB_LAUNCH(column_sums_kernel, dim3(unsigned((C + 255) / 256)), dim3(256), 0, stream, part, dbeta,
                       dgamma, chunks, C);
    });
  });
}

}  // namespace db::kernels
