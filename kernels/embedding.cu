// Embedding kernels: diffusers' sinusoidal timestep embedding, the token / position table gather, and its
// deterministic scatter-add backward.
//
// Launch configuration: 256 threads, grid-stride loops over at most 4096 blocks.
// - timestep_embedding: one thread per (sample, frequency) writes the sin and the cos; the float
//   arithmetic follows CpuOps (and diffusers) step by step, with accurate expf/sinf/cosf.
// - embedding_forward: one thread per (position, pack of V channels), V = 16 / sizeof(T) when C and the
//   pointers allow (one 128-bit copy), else 1. A bad id zeroes its row and leaves in *bad the smallest
//   1 + position over all bad ids (an integer CAS loop: the report does not depend on timing).
// - embedding_backward, no atomics: pass 1, one thread per position i links it to the next position
//   with the same id (O(n^2) compares; n is 77 B tokens) and flags the first occurrence; pass 2, one
//   thread per (first occurrence, pack of 4 channels) walks its chain in position order:
//   dtable[id] = ((dtable[id] + dy[i0]) + dy[i1]) + ..., CpuOps' order, so f32 results are bit-exact.
// ptxas -v, sm_90a (CUDA 13, -O3), no spills on sm_80 or sm_90a: timestep 30 registers; gather 18-30;
// link 18-19; scatter-add 22-30; no shared memory.
#include <cmath>
#include <cstdint>

#include "dreambooth/kernels/elementwise.h"
#include "elementwise_common.cuh"

namespace db::kernels {
namespace {

using namespace detail;

struct TimestepParams {
  int half;
  bool flip;
  float log_period;  // -ln(max_period), rounded to float once as CpuOps does
  float denom;       // half - downscale_freq_shift
  float scale;
};

// y [B, dim] from t [B]; units B * max(half, 1).
template <class T>
__global__ void __launch_bounds__(kThreads)
    timestep_kernel(const float* __restrict__ t, T* __restrict__ y, int B, int dim, TimestepParams p) {
  const int per = p.half > 0 ? p.half : 1;
  for (int64_t u = global_thread(); u < int64_t(B) * per; u += grid_stride()) {
    const int64_t b = u / per;
    const int i = int(u % per);
    T* row = y + b * dim;
    if (i < p.half) {
      const float freq = expf(p.log_period * float(i) / p.denom);
      const float arg = p.scale * (t[b] * freq);
      const float s = sinf(arg), c = cosf(arg);
      row[i] = from_f<T>(p.flip ? c : s);
      row[p.half + i] = from_f<T>(p.flip ? s : c);
    }
    if (i == 0 && dim % 2) row[dim - 1] = from_f<T>(0.f);
  }
}

template <class I>
__device__ __forceinline__ bool valid_id(I id, int64_t V) {
  return id >= 0 && int64_t(id) < V;
}

// y [n, C] = table [V, C] rows of ids [n]; u indexes packs of V along y.
template <int P, class I, class T>
__global__ void __launch_bounds__(kThreads)
    embedding_fwd_kernel(const I* __restrict__ ids, const T* __restrict__ table, T* __restrict__ y, int64_t n,
                         int64_t C, int64_t V, int* bad) {
  using Vec = Pack<T, P>;
  for (int64_t u = global_thread(); u < n * C / P; u += grid_stride()) {
    const int64_t e = u * P, i = e / C, c = e % C;
    const I id = ids[i];
    Vec v;
    if (valid_id(id, V)) {
      v = *reinterpret_cast<const Vec*>(table + int64_t(id) * C + c);
    } else {
#pragma unroll
      for (int k = 0; k < P; ++k) v.v[k] = from_f<T>(0.f);
      if (c == 0 && bad) {
        const int want = int(i + 1);
        int old = atomicCAS(bad, 0, want);
        while (old != 0 && old > want) {
          const int prev = atomicCAS(bad, old, want);
          if (prev == old) break;
          old = prev;
        }
      }
    }
    *reinterpret_cast<Vec*>(y + e) = v;
  }
}

// next[i]: the next position with ids[i]'s id, or -1; head[i]: 1 when i is its id's first position (and
// the id is valid).
template <class I>
__global__ void __launch_bounds__(kThreads)
    embedding_link_kernel(const I* __restrict__ ids, int n, int64_t V, int* __restrict__ next,
                          int* __restrict__ head) {
  for (int64_t u = global_thread(); u < n; u += grid_stride()) {
    const int i = int(u);
    const I id = ids[i];
    int nx = -1;
    for (int j = i + 1; j < n && nx < 0; ++j)
      if (ids[j] == id) nx = j;
    int first = valid_id(id, V);
    for (int j = 0; j < i && first; ++j)
      if (ids[j] == id) first = 0;
    next[i] = nx;
    head[i] = first;
  }
}

// dtable [V, C] (f32) += dy [n, C] rows, chain by chain; u indexes packs of P along dy.
template <int P, class I, class T>
__global__ void __launch_bounds__(kThreads)
    embedding_bwd_kernel(const I* __restrict__ ids, const T* __restrict__ dy, float* __restrict__ dtable,
                         const int* __restrict__ next, const int* __restrict__ head, int64_t n, int64_t C) {
  for (int64_t u = global_thread(); u < n * C / P; u += grid_stride()) {
    const int64_t e = u * P, i = e / C, c = e % C;
    if (!head[i]) continue;
    float* row = dtable + int64_t(ids[i]) * C + c;
    float acc[P];
    load_f<P>(row, acc);
    for (int64_t j = i; j >= 0; j = next[j]) {
      float d[P];
      load_f<P>(dy + j * C + c, d);
#pragma unroll
      for (int k = 0; k < P; ++k) acc[k] += d[k];
    }
    store_f<P>(row, acc);
  }
}

// Runs f.template operator()<I>() with the index type of an I32 / I64 dtype; false otherwise.
template <class F>
bool with_id_type(DType t, F&& f) {
  if (t == DType::I32) {
    f.template operator()<int32_t>();
    return true;
  }
  if (t == DType::I64) {
    f.template operator()<int64_t>();
    return true;
  }
  return false;
}

}  // namespace

cudaError_t timestep_embedding(const float* t, DType ty, void* y, int B, int dim, bool flip_sin_to_cos,
                               float downscale_freq_shift, float scale, float max_period,
                               cudaStream_t stream) {
  if (B < 0 || dim < 0) return cudaErrorInvalidValue;
  if (int64_t(B) * dim == 0) return cudaSuccess;
  const int half = dim / 2;
  const TimestepParams p{half, flip_sin_to_cos, float(-std::log(double(max_period))),
                         float(half) - downscale_freq_shift, scale};
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(ty, [&]<class T>() {
    err = DB_LAUNCH((timestep_kernel<T>), grid_for(int64_t(B) * (half > 0 ? half : 1)), dim3(kThreads), 0,
                    stream, t, static_cast<T*>(y), B, dim, p);
  });
  return err;
}

cudaError_t embedding_forward(DType id_t, const void* ids, DType t, const void* table, void* y, int64_t n,
                              int C, int64_t V, int* bad, cudaStream_t stream) {
  if (n < 0 || C < 0 || V < 0) return cudaErrorInvalidValue;
  if (n * C == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_id_type(id_t, [&]<class I>() {
    with_float_type(t, [&]<class T>() {
      constexpr int P = int(16 / sizeof(T));
      const I* ip = static_cast<const I*>(ids);
      const T* tp = static_cast<const T*>(table);
      T* yp = static_cast<T*>(y);
      if (C % P == 0 && aligned(table, 16) && aligned(y, 16))
        err = DB_LAUNCH((embedding_fwd_kernel<P, I, T>), grid_for(n * C / P), dim3(kThreads), 0, stream, ip,
                        tp, yp, n, int64_t(C), V, bad);
      else
        err = DB_LAUNCH((embedding_fwd_kernel<1, I, T>), grid_for(n * C), dim3(kThreads), 0, stream, ip, tp,
                        yp, n, int64_t(C), V, bad);
    });
  });
  return err;
}

size_t embedding_backward_workspace(int64_t n, int64_t V) {
  return size_t(2 * n) * sizeof(int);
}

cudaError_t embedding_backward(DType id_t, const void* ids, DType t, const void* dy, float* dtable, int64_t n,
                               int C, int64_t V, void* workspace, cudaStream_t stream) {
  if (n < 0 || n > INT32_MAX || C < 0 || V < 0) return cudaErrorInvalidValue;
  if (n * C == 0) return cudaSuccess;
  if (!workspace) return cudaErrorInvalidValue;
  int* next = static_cast<int*>(workspace);
  int* head = next + n;
  cudaError_t err = cudaErrorInvalidValue;
  with_id_type(id_t, [&]<class I>() {
    with_float_type(t, [&]<class T>() {
      const I* ip = static_cast<const I*>(ids);
      const T* dyp = static_cast<const T*>(dy);
      err = DB_LAUNCH((embedding_link_kernel<I>), grid_for(n), dim3(kThreads), 0, stream, ip, int(n), V, next,
                      head);
      if (err != cudaSuccess) return;
      if (C % 4 == 0 && aligned(dtable, 16) && aligned(dy, 4 * sizeof(T)))
        err = DB_LAUNCH((embedding_bwd_kernel<4, I, T>), grid_for(n * C / 4), dim3(kThreads), 0, stream, ip,
                        dyp, dtable, next, head, n, int64_t(C));
      else
        err = DB_LAUNCH((embedding_bwd_kernel<1, I, T>), grid_for(n * C), dim3(kThreads), 0, stream, ip, dyp,
                        dtable, next, head, n, int64_t(C));
    });
  });
  return err;
}

}  // namespace db::kernels
