// Group norm over NHWC [B, N, C] with G groups of cg = C/G consecutive channels, optional fused SiLU
// (include/dreambooth/kernels/norm.h; semantics of CpuOps::group_norm_forward/backward).
//
// Forward: one block per (group, batch), 32..512 threads by the group's size. The contract gives the
// forward no workspace, so a group's statistics stay inside one block: each thread merges
// (count, mean, M2) of the packs it reads (V channels of one row: 16-byte loads when cg and the
// pointers allow, else 8/4/2 bytes or scalars), then a fixed shuffle tree per warp and across warps;
// the second pass (x read again, from L2 for SD sizes) applies y = x a[c] + s[c] with a, s per channel
// in shared memory, CpuOps' formula. SD 1.5 at 64x64, C = 320: 32 blocks per sample of 40960 values.
//
// Backward (workspace: per-chunk partials, per-channel totals, per-group coefficients):
//   1. partials  grid (channel tiles, row chunks of kRows, B), block (32, min(8, N)): a thread owns V
//   channels
//      and walks rows; sum dz and sum dz xhat per channel, the 8 row slices summed in order in shared
//      memory -> part [B, chunks, 2, C];
//   2. totals    one thread per channel: chunks summed in order per sample -> tot [B, 2, C], samples in
//      order -> dbeta/dgamma += (no float atomics: every sum has a fixed order);
//   3. coeffs    one thread per (b, g): m1 = sum dz gamma / n, m2 = sum dz gamma xhat / n;
//   4. dx        grid and block as 1: dx = rstd (dz gamma - m1 - xhat m2).
// Statistics and sums are f32; dz recomputes SiLU's pre-activation from x, mean, rstd, gamma, beta.
//
// ptxas (sm_90a, CUDA 13.0), over the T x V x SiLU instantiations, no spills: forward 38-70 registers
// (U = 2..8 packs in flight per thread; (512, 1) bounds: with (512) alone ptxas spilled 12-24 B), 400 B
// static + 8 cg B dynamic shared; partials 31-80 registers (bf16, V = 8, SiLU the most), 2-16 KiB shared; dx
// 24-86 registers (__launch_bounds__(256, 1): with (256) alone ptxas spilled 4-8 B at 48 registers); totals,
// coeffs 32.
#include <algorithm>

#include "dreambooth/kernels/norm.h"
#include "norm_common.cuh"

namespace db::kernels {
namespace {

using norm::Stats;

constexpr int kRows = 64;     // rows per chunk of the backward grid
constexpr int kMaxCg = 6144;  // a[c], s[c] of one group in <= 48 KiB of dynamic shared memory
using norm::kSliceRows;

// The U packs of V channels that thread item i0 starts (items i0 + u * blockDim.x, pack j of row n of a
// group's [N, cv] packs; rows C apart); those past `items` are left unset.
template <class T, int V, int U>
__device__ __forceinline__ void load_packs(const T* x, int i0, int items, int cv, int C, float (&v)[U][V]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int i = i0 + u * blockDim.x, n = i / cv, j = i - n * cv;
    if (i < items) norm::load<T, V>(x + int64_t(n) * C + j * V, v[u]);
  }
}

// x, y [B, N, C]; mean, rstd [B, G]. grid (G, B).
template <class T, int V, bool SILU>
__global__ void __launch_bounds__(512, 1)
    gn_forward_kernel(const T* __restrict__ x, const T* __restrict__ gamma, const T* __restrict__ beta,
                      T* __restrict__ y, float* mean, float* rstd, int N, int C, int G, float eps) {
  DB_DYNAMIC_SMEM(float, coef);  // [2, cg]: a[c], s[c]
  DB_SHARED(float[3][33], red);
  const int cg = C / G, cv = cg / V, g = blockIdx.x, b = blockIdx.y;
  const int64_t base = int64_t(b) * N * C + int64_t(g) * cg;
  const int items = N * cv;  // < 2^31, checked by the launcher
  // U packs per thread in flight (32 bytes, at most 8 packs): few blocks share the GPU, so each must keep
  // many loads outstanding; then the U packs are merged in order.
  constexpr int U = 32 / (V * int(sizeof(T))) < 8 ? 32 / (V * int(sizeof(T))) : 8;
  Stats s{0.f, 0.f, 0.f};
  for (int i0 = threadIdx.x; i0 < items; i0 += U * blockDim.x) {
    float v[U][V];
    load_packs<T, V, U>(x + base, i0, items, cv, C, v);
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * int(blockDim.x) < items) s = norm::merge(s, norm::pack_stats<V>(v[u]));
  }
  s = norm::block_reduce(s, red);
  const float m = s.mean, r = 1.f / sqrtf(s.m2 / s.n + eps);
  if (threadIdx.x == 0) {
    if (mean) mean[b * G + g] = m;
    if (rstd) rstd[b * G + g] = r;
  }
  for (int c = threadIdx.x; c < cg; c += blockDim.x) {
    const float a = r * norm::to_f(gamma[g * cg + c]);
    coef[c] = a;
    coef[cg + c] = norm::to_f(beta[g * cg + c]) - m * a;
  }
  __syncthreads();
  for (int i0 = threadIdx.x; i0 < items; i0 += U * blockDim.x) {
    float v[U][V];
    load_packs<T, V, U>(x + base, i0, items, cv, C, v);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = i0 + u * blockDim.x, n = i / cv, j = i - n * cv;
      if (i >= items) break;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const int c = j * V + k;
        v[u][k] = v[u][k] * coef[c] + coef[cg + c];
        if constexpr (SILU) v[u][k] = norm::silu(v[u][k]);
      }
      norm::store<T, V>(y + base + int64_t(n) * C + j * V, v[u]);
    }
  }
}

// Per-thread constants of the V channels c0.. of sample b (backward kernels).
template <class T, int V, bool SILU>
struct ChannelConsts {
  float m[V], r[V], ga[V], be[V];
  __device__ __forceinline__ void load(const T* gamma, const T* beta, const float* mean, const float* rstd,
                                       int b, int c0, int cg, int G) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int grp = (c0 + k) / cg;
      m[k] = mean[b * G + grp];
      r[k] = rstd[b * G + grp];
      ga[k] = norm::to_f(gamma[c0 + k]);
      be[k] = SILU ? norm::to_f(beta[c0 + k]) : 0.f;
    }
  }
};

// part [B, chunks, 2, C]: sums over the chunk's rows of dz and dz xhat. grid (tiles, chunks, B).
template <class T, int V, bool SILU>
__global__ void __launch_bounds__(256)
    gn_backward_partials_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                const T* __restrict__ gamma, const T* __restrict__ beta,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                float* __restrict__ part, int N, int C, int G) {
  DB_SHARED(float[2][kSliceRows][32 * V], red);
  const int b = blockIdx.z, chunk = blockIdx.y, chunks = gridDim.y;
  const int tx = threadIdx.x, ty = threadIdx.y, c0 = (blockIdx.x * 32 + tx) * V;
  const bool active = c0 < C;
  float s1[V] = {}, s2[V] = {};
  if (active) {
    ChannelConsts<T, V, SILU> k;
    k.load(gamma, beta, mean, rstd, b, c0, C / G, G);
    const int n1 = min(N, (chunk + 1) * kRows);
    for (int n = chunk * kRows + ty; n < n1; n += blockDim.y) {
      const int64_t off = (int64_t(b) * N + n) * C + c0;
      float xv[V], dv[V];
      norm::load<T, V>(x + off, xv);
      norm::load<T, V>(dy + off, dv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float xhat = (xv[i] - k.m[i]) * k.r[i];
        const float dz = SILU ? norm::silu_grad(xhat * k.ga[i] + k.be[i], dv[i]) : dv[i];
        s1[i] += dz;
        s2[i] += dz * xhat;
      }
    }
  }
  float* out = part + (int64_t(b) * chunks + chunk) * 2 * C;
  norm::slice_reduce_store<V>(red, s1, s2, out, out + C, c0, active);
}

// tot [B, 2, C] = part summed over chunks; dbeta[c] += sum_b tot[b][0][c], dgamma[c] += sum_b tot[b][1][c].
__global__ void __launch_bounds__(256)
    gn_backward_totals_kernel(const float* __restrict__ part, float* __restrict__ tot, float* dgamma,
                              float* dbeta, int B, int chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float a0 = 0.f, a1 = 0.f;
  for (int b = 0; b < B; ++b) {
    float t0 = 0.f, t1 = 0.f;
    for (int k = 0; k < chunks; ++k) {
      t0 += part[((int64_t(b) * chunks + k) * 2) * C + c];
      t1 += part[((int64_t(b) * chunks + k) * 2 + 1) * C + c];
    }
    tot[(int64_t(b) * 2) * C + c] = t0;
    tot[(int64_t(b) * 2 + 1) * C + c] = t1;
    a0 += t0;
    a1 += t1;
  }
  if (dbeta) dbeta[c] += a0;
  if (dgamma) dgamma[c] += a1;
}

// coef [B, G, 2] = (sum dz gamma, sum dz gamma xhat) / (N cg) per group.
template <class T>
__global__ void __launch_bounds__(256)
    gn_backward_coeffs_kernel(const float* __restrict__ tot, const T* __restrict__ gamma,
                              float* __restrict__ coef, int B, int N, int C, int G) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= B * G) return;
  const int b = i / G, g = i - b * G, cg = C / G;
  float a1 = 0.f, a2 = 0.f;
  for (int c = g * cg; c < (g + 1) * cg; ++c) {
    const float ga = norm::to_f(gamma[c]);
    a1 += tot[(int64_t(b) * 2) * C + c] * ga;
    a2 += tot[(int64_t(b) * 2 + 1) * C + c] * ga;
  }
  const float n = float(int64_t(N) * cg);
  coef[2 * i] = a1 / n;
  coef[2 * i + 1] = a2 / n;
}

// dx [B, N, C] = rstd (dz gamma - m1 - xhat m2). grid (tiles, chunks, B), block (32, <= kSliceRows).
template <class T, int V, bool SILU>
__global__ void __launch_bounds__(256, 1)
    gn_backward_dx_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ gamma,
                          const T* __restrict__ beta, const float* __restrict__ mean,
                          const float* __restrict__ rstd, const float* __restrict__ coef, T* __restrict__ dx,
                          int N, int C, int G) {
  const int b = blockIdx.z, chunk = blockIdx.y, cg = C / G;
  const int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
  if (c0 >= C) return;
  ChannelConsts<T, V, SILU> k;
  k.load(gamma, beta, mean, rstd, b, c0, cg, G);
  float m1[V], m2[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int grp = (c0 + i) / cg;
    m1[i] = coef[2 * (b * G + grp)];
    m2[i] = coef[2 * (b * G + grp) + 1];
  }
  const int n1 = min(N, (chunk + 1) * kRows);
  for (int n = chunk * kRows + threadIdx.y; n < n1; n += blockDim.y) {
    const int64_t off = (int64_t(b) * N + n) * C + c0;
    float xv[V], dv[V];
    norm::load<T, V>(x + off, xv);
    norm::load<T, V>(dy + off, dv);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float xhat = (xv[i] - k.m[i]) * k.r[i];
      const float dz = SILU ? norm::silu_grad(xhat * k.ga[i] + k.be[i], dv[i]) : dv[i];
      xv[i] = k.r[i] * (dz * k.ga[i] - m1[i] - xhat * m2[i]);
    }
    norm::store<T, V>(dx + off, xv);
  }
}

int row_chunks(int N) {
  return (N + kRows - 1) / kRows;
}

bool valid_shape(int B, int N, int C, int G) {
  return B >= 1 && B <= 65535 && N >= 1 && C >= 1 && G >= 1 && C % G == 0 && row_chunks(N) <= 65535;
}

// Workspace layout (floats): part [B, chunks, 2, C], tot [B, 2, C], coef [B, G, 2].
size_t part_floats(int B, int N, int C) {
  return size_t(B) * row_chunks(N) * 2 * C;
}
size_t tot_floats(int B, int C) {
  return size_t(B) * 2 * C;
}

}  // namespace

cudaError_t group_norm_forward(DType t, const void* x, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int B, int N, int C, int G, float eps, bool silu,
                               cudaStream_t stream) {
  if (!valid_shape(B, N, C, G) || C / G > kMaxCg || int64_t(N) * (C / G) > 0x7fffffff || !x || !gamma ||
      !beta || !y)
    return cudaErrorInvalidValue;
  const int cg = C / G;
  return norm::with_type(t, [&](auto tag) {
    using T = decltype(tag);
    const int v = norm::pick_vec<T>(cg, {x, y});
    return norm::with_vec<T>(v, [&](auto vc) {
      constexpr int V = decltype(vc)::value;
      const int64_t items = int64_t(N) * (cg / V);
      const int threads = items >= 8192 ? 512 : items >= 1024 ? 256 : items > 32 ? 64 : 32;
      const size_t smem = size_t(2) * cg * sizeof(float);
      const auto* xp = static_cast<const T*>(x);
      const auto* gp = static_cast<const T*>(gamma);
      const auto* bp = static_cast<const T*>(beta);
      auto* yp = static_cast<T*>(y);
      const dim3 grid(G, B);
      if (silu)
        return DB_LAUNCH((gn_forward_kernel<T, V, true>), grid, dim3(threads), smem, stream, xp, gp, bp, yp,
                         mean, rstd, N, C, G, eps);
      return DB_LAUNCH((gn_forward_kernel<T, V, false>), grid, dim3(threads), smem, stream, xp, gp, bp, yp,
                       mean, rstd, N, C, G, eps);
    });
  });
}

size_t group_norm_backward_workspace(int B, int N, int C, int G) {
  if (!valid_shape(B, N, C, G)) return 0;
  return (part_floats(B, N, C) + tot_floats(B, C) + size_t(B) * G * 2) * sizeof(float);
}

cudaError_t group_norm_backward(DType t, const void* dy, const void* x, const void* gamma, const void* beta,
                                const float* mean, const float* rstd, void* dx, float* dgamma, float* dbeta,
                                int B, int N, int C, int G, bool silu, void* workspace, cudaStream_t stream) {
  if (!valid_shape(B, N, C, G) || !dy || !x || !gamma || (silu && !beta) || !mean || !rstd || !workspace)
    return cudaErrorInvalidValue;
  if (!dx && !dgamma && !dbeta) return cudaSuccess;
  float* part = static_cast<float*>(workspace);
  float* tot = part + part_floats(B, N, C);
  float* coef = tot + tot_floats(B, C);
  const int chunks = row_chunks(N);
  return norm::with_type(t, [&](auto tag) {
    using T = decltype(tag);
    const int v = norm::pick_vec<T>(C, {dy, x, dx, gamma, silu ? beta : nullptr});
    return norm::with_vec<T>(v, [&](auto vc) -> cudaError_t {
      constexpr int V = decltype(vc)::value;
      const auto* dyp = static_cast<const T*>(dy);
      const auto* xp = static_cast<const T*>(x);
      const auto* gp = static_cast<const T*>(gamma);
      const auto* bp = static_cast<const T*>(beta);
      const int tiles = (C / V + 31) / 32;
      const dim3 grid(tiles, chunks, B), block(32, std::min(N, kSliceRows));
      cudaError_t err = silu ? DB_LAUNCH((gn_backward_partials_kernel<T, V, true>), grid, block, 0, stream,
                                         dyp, xp, gp, bp, mean, rstd, part, N, C, G)
                             : DB_LAUNCH((gn_backward_partials_kernel<T, V, false>), grid, block, 0, stream,
                                         dyp, xp, gp, bp, mean, rstd, part, N, C, G);
      if (err != cudaSuccess) return err;
      err = DB_LAUNCH(gn_backward_totals_kernel, dim3(unsigned((C + 255) / 256)), dim3(256), 0, stream, part,
                      tot, dgamma, dbeta, B, chunks, C);
      if (err != cudaSuccess || !dx) return err;
      err = DB_LAUNCH((gn_backward_coeffs_kernel<T>), dim3(unsigned((B * G + 255) / 256)), dim3(256), 0,
                      stream, tot, gp, coef, B, N, C, G);
      if (err != cudaSuccess) return err;
      auto* dxp = static_cast<T*>(dx);
      return silu ? DB_LAUNCH((gn_backward_dx_kernel<T, V, true>), grid, block, 0, stream, dyp, xp, gp, bp,
                              mean, rstd, coef, dxp, N, C, G)
                  : DB_LAUNCH((gn_backward_dx_kernel<T, V, false>), grid, block, 0, stream, dyp, xp, gp, bp,
                              mean, rstd, coef, dxp, N, C, G);
    });
  });
}

}  // namespace db::kernels
