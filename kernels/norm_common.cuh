#pragma once
// Device helpers shared by kernels/group_norm.cu and kernels/layer_norm.cu: packed loads of V elements,
// mean/M2 statistics merged in a fixed order (Chan et al.), warp/block reductions, the column-sum pass
// that turns per-chunk partial sums into the += of dgamma/dbeta.
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "dreambooth/core/dtype.h"
#include "dreambooth/cuda/compat.cuh"

namespace db::kernels::norm {

// V consecutive elements in one load/store of V * sizeof(T) <= 16 bytes.
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

__device__ __forceinline__ float to_f(float v) {
  return v;
}
__device__ __forceinline__ float to_f(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <class T>
__device__ __forceinline__ T from_f(float v) {
  if constexpr (std::is_same_v<T, float>)
    return v;
  else
    return __float2bfloat16(v);
}

template <class T, int V>
__device__ __forceinline__ void load(const T* p, float (&out)[V]) {
  const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int k = 0; k < V; ++k) out[k] = to_f(pk.v[k]);
}

template <class T, int V>
__device__ __forceinline__ void store(T* p, const float (&in)[V]) {
  Pack<T, V> pk;
#pragma unroll
  for (int k = 0; k < V; ++k) pk.v[k] = from_f<T>(in[k]);
  *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

__device__ __forceinline__ float silu(float v) {
  return v / (1.f + expf(-v));
}
// dy * silu'(z), silu'(z) = s (1 + z (1 - s)), s = sigmoid(z): CpuOps' formula.
__device__ __forceinline__ float silu_grad(float z, float dy) {
  const float s = 1.f / (1.f + expf(-z));
  return dy * s * (1.f + z * (1.f - s));
}

// Count, mean and sum of squared deviations of a set of values. Merging two sets is exact algebra
// (no cancellation of large sums), so f32 stays close to the CPU's double two-pass statistics.
struct Stats {
  float n, mean, m2;
};

__device__ __forceinline__ Stats merge(Stats a, Stats b) {
  const float n = a.n + b.n;
  if (n == 0.f) return a;
  const float d = b.mean - a.mean, f = b.n / n;
  return {n, a.mean + d * f, a.m2 + b.m2 + d * d * a.n * f};
}

// Statistics of V values (two passes in registers).
template <int V>
__device__ __forceinline__ Stats pack_stats(const float (&v)[V]) {
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < V; ++k) s += v[k];
  const float m = s / float(V);
  float q = 0.f;
#pragma unroll
  for (int k = 0; k < V; ++k) q += (v[k] - m) * (v[k] - m);
  return {float(V), m, q};
}

// Lane 0 gets the merge of the 32 lanes' statistics (a fixed tree).
__device__ __forceinline__ Stats warp_reduce(Stats s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const Stats o{__shfl_down_sync(0xffffffffu, s.n, off), __shfl_down_sync(0xffffffffu, s.mean, off),
                  __shfl_down_sync(0xffffffffu, s.m2, off)};
    s = merge(s, o);
  }
  return s;
}

// Every thread gets the block's statistics. blockDim.x a multiple of 32, <= 1024; red [3][33] shared.
__device__ __forceinline__ Stats block_reduce(Stats s, float (*red)[33]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  s = warp_reduce(s);
  if (lane == 0) {
    red[0][warp] = s.n;
    red[1][warp] = s.mean;
    red[2][warp] = s.m2;
  }
  __syncthreads();
  if (warp == 0) {
    s = lane < warps ? Stats{red[0][lane], red[1][lane], red[2][lane]} : Stats{0.f, 0.f, 0.f};
    s = warp_reduce(s);
    if (lane == 0) {
      red[0][32] = s.n;
      red[1][32] = s.mean;
      red[2][32] = s.m2;
    }
  }
  __syncthreads();
  return {red[0][32], red[1][32], red[2][32]};
}

// Every lane gets the sum (a fixed butterfly: the same bits in every lane).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// The backward partial-sum kernels run blocks of (32, S <= kSliceRows): 32 threads of V channels each,
// the rows of a chunk dealt to S slices (S < 8 only when there are fewer rows).
constexpr int kSliceRows = 8;

// Sums the blockDim.y slices' (s1, s2) in slice order; out0/out1 [C] get the V channels from c0 when
// `active`. red [2][kSliceRows][32 * V] shared. Every thread of the block must call it.
template <int V>
__device__ __forceinline__ void slice_reduce_store(float (&red)[2][kSliceRows][32 * V], const float (&s1)[V],
                                                   const float (&s2)[V], float* out0, float* out1, int c0,
                                                   bool active) {
  const int tx = threadIdx.x, ty = threadIdx.y;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    red[0][ty][tx * V + i] = s1[i];
    red[1][ty][tx * V + i] = s2[i];
  }
  __syncthreads();
  if (!active) return;
  for (int j = ty; j < 2; j += blockDim.y) {  // slice 0 sums s1, slice 1 s2 (slice 0 both if alone)
    float* out = j == 0 ? out0 : out1;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      float t = 0.f;
      for (int r = 0; r < int(blockDim.y); ++r) t += red[j][r][tx * V + i];
      out[c0 + i] = t;
    }
  }
}

// Widest V (elements per packed access, <= 16 bytes) that divides `divisor` and to which every
// non-null pointer is aligned.
template <class T>
inline int pick_vec(int divisor, std::initializer_list<const void*> ptrs) {
  for (int v = int(16 / sizeof(T)); v > 1; v >>= 1) {
    bool ok = divisor % v == 0;
    for (const void* p : ptrs) ok = ok && (reinterpret_cast<uintptr_t>(p) % (v * sizeof(T)) == 0);
    if (ok) return v;
  }
  return 1;
}

// f(std::integral_constant<int, V>) for the runtime v (a power of two <= 16 / sizeof(T)).
template <class T, class F>
cudaError_t with_vec(int v, F&& f) {
  switch (v) {
    case 8:
      if constexpr (sizeof(T) <= 2) return f(std::integral_constant<int, 8>{});
      break;
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    default:
      return f(std::integral_constant<int, 1>{});
  }
  return cudaErrorInvalidValue;
}

// f(T{}) for the element type t (F32 or BF16 only).
template <class F>
cudaError_t with_type(DType t, F&& f) {
  if (t == DType::F32) return f(float{});
  if (t == DType::BF16) return f(__nv_bfloat16{});
  return cudaErrorInvalidValue;
}

}  // namespace db::kernels::norm
