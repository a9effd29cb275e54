// Elementwise kernels: fill, cast, activations (SiLU, erf GELU, QuickGELU) and GEGLU forward/backward,
// add / scale, broadcast add and its reduction, bias add, column sums (bias gradients).
//
// Launch configuration: 256 threads, grid-stride loops over at most 4096 blocks (elementwise_common.cuh).
// Each thread moves V = 16 / (widest operand's element size) elements per step with one packed load per
// operand (128-bit for f32 or for 8 bf16) when every pointer is aligned to its pack and, for row-shaped
// ops, the row width is a multiple of V; else V = 1. The flat 1-D ops run the packed body over n / V
// packs and a scalar tail. Math is fp32; results round once to the output dtype.
// Reductions (column_sum_add, add_broadcast_backward) are deterministic, no float atomics: pass 1, a
// (32 x 8) block per (32 V columns, 256-row chunk[, batch]): each thread sums rows y, y + 8, ... of its
// chunk in order, the 8 lane sums are added in order 0..7 into the workspace [B][chunks][N]; pass 2 adds
// the chunks in order.
// ptxas -v, sm_90a (CUDA 13, -O3), no spills on sm_80 or sm_90a: activation / cast / add / scale maps
// 22-40 registers; GEGLU 18-40; broadcast add 22-32; fill 32; column_partial 32-38 registers with
// 4 KiB (f32, V = 4) / 8 KiB (bf16, V = 8) / 1 KiB (V = 1) static shared memory; column_finish 30-32.
#include "dreambooth/kernels/elementwise.h"
#include "elementwise_common.cuh"

namespace db::kernels {
namespace {

using namespace detail;

constexpr int kColLanes = 32;        // threadIdx.x: column packs
constexpr int kRowLanes = 8;         // threadIdx.y: rows y, y + 8, ...
constexpr int64_t kChunkRows = 256;  // rows per pass-1 block

__device__ __forceinline__ float sigmoid_f(float x) {
  return 1.f / (1.f + expf(-x));
}
__device__ __forceinline__ float gelu_f(float x) {
  return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
}
// d/dx 0.5 x (1 + erf(x / sqrt2)) = Phi(x) + x phi(x)
__device__ __forceinline__ float gelu_grad_f(float x) {
  return 0.5f * (1.f + erff(x * 0.70710678118654752f)) + x * 0.3989422804014327f * expf(-0.5f * x * x);
}

template <Act A>
struct ActForward {
  __device__ __forceinline__ float operator()(float x) const {
    if constexpr (A == Act::SiLU) return x * sigmoid_f(x);
    if constexpr (A == Act::GELU) return gelu_f(x);
    if constexpr (A == Act::QuickGELU) return x * sigmoid_f(1.702f * x);
    return x;
  }
};

template <Act A>
struct ActBackward {  // (x, dy) -> dx
  __device__ __forceinline__ float operator()(float x, float dy) const {
    if constexpr (A == Act::SiLU) {
      const float s = sigmoid_f(x);
      return dy * s * (1.f + x * (1.f - s));
    }
    if constexpr (A == Act::GELU) return dy * gelu_grad_f(x);
    if constexpr (A == Act::QuickGELU) {
      const float s = sigmoid_f(1.702f * x);
      return dy * (s + 1.702f * x * s * (1.f - s));
    }
    return dy;
  }
};

struct Identity {
  __device__ __forceinline__ float operator()(float x) const { return x; }
};
struct Scale {
  float s;
  __device__ __forceinline__ float operator()(float x) const { return s * x; }
};
struct Axpby {
  float alpha, beta;
  __device__ __forceinline__ float operator()(float a, float b) const { return alpha * a + beta * b; }
};

// ---- flat maps: y[i] = f(a[i] (, b[i])), packs [0, nvec), scalar tail [nvec V, n) ----

template <int V, class T>
__global__ void __launch_bounds__(kThreads) fill_kernel(T* x, int64_t n, int64_t nvec, T value) {
  Pack<T, V> k;
#pragma unroll
  for (int i = 0; i < V; ++i) k.v[i] = value;
  for (int64_t u = global_thread(); u < nvec; u += grid_stride()) reinterpret_cast<Pack<T, V>*>(x)[u] = k;
  for (int64_t i = nvec * V + global_thread(); i < n; i += grid_stride()) x[i] = value;
}

template <int V, class TY, class TA, class F>
__global__ void __launch_bounds__(kThreads) map1_kernel(const TA* a, TY* y, int64_t n, int64_t nvec, F f) {
  for (int64_t u = global_thread(); u < nvec; u += grid_stride()) {
    float fa[V], fy[V];
    load_f<V>(a + u * V, fa);
#pragma unroll
    for (int i = 0; i < V; ++i) fy[i] = f(fa[i]);
    store_f<V>(y + u * V, fy);
  }
  for (int64_t i = nvec * V + global_thread(); i < n; i += grid_stride()) y[i] = from_f<TY>(f(to_f(a[i])));
}

template <int V, class TY, class TA, class TB, class F>
__global__ void __launch_bounds__(kThreads)
    map2_kernel(const TA* a, const TB* b, TY* y, int64_t n, int64_t nvec, F f) {
  for (int64_t u = global_thread(); u < nvec; u += grid_stride()) {
    float fa[V], fb[V], fy[V];
    load_f<V>(a + u * V, fa);
    load_f<V>(b + u * V, fb);
#pragma unroll
    for (int i = 0; i < V; ++i) fy[i] = f(fa[i], fb[i]);
    store_f<V>(y + u * V, fy);
  }
  for (int64_t i = nvec * V + global_thread(); i < n; i += grid_stride())
    y[i] = from_f<TY>(f(to_f(a[i]), to_f(b[i])));
}

template <class... T>
constexpr int pack_of() {
  size_t widest = 1;
  ((widest = sizeof(T) > widest ? sizeof(T) : widest), ...);
  return int(16 / widest);
}

template <class TY, class TA, class F>
cudaError_t launch_map1(const TA* a, TY* y, int64_t n, F f, cudaStream_t stream) {
  constexpr int V = pack_of<TA, TY>();
  const bool vec = aligned(a, V * sizeof(TA)) && aligned(y, V * sizeof(TY));
  const int64_t nvec = vec ? n / V : 0;
  return DB_LAUNCH((map1_kernel<V, TY, TA, F>), grid_for(vec ? nvec : n), dim3(kThreads), 0, stream, a, y, n,
                   nvec, f);
}

template <class TY, class TA, class TB, class F>
cudaError_t launch_map2(const TA* a, const TB* b, TY* y, int64_t n, F f, cudaStream_t stream) {
  constexpr int V = pack_of<TA, TB, TY>();
  const bool vec = aligned(a, V * sizeof(TA)) && aligned(b, V * sizeof(TB)) && aligned(y, V * sizeof(TY));
  const int64_t nvec = vec ? n / V : 0;
  return DB_LAUNCH((map2_kernel<V, TY, TA, TB, F>), grid_for(vec ? nvec : n), dim3(kThreads), 0, stream, a, b,
                   y, n, nvec, f);
}

template <class T>
cudaError_t launch_fill(void* x, int64_t n, T value, cudaStream_t stream) {
  constexpr int V = pack_of<T>();
  T* p = static_cast<T*>(x);
  const int64_t nvec = aligned(p, 16) ? n / V : 0;
  return DB_LAUNCH((fill_kernel<V, T>), grid_for(nvec ? nvec : n), dim3(kThreads), 0, stream, p, n, nvec,
                   value);
}

// Runs f.template operator()<T>() with the element type of a float dtype (F16 too); false otherwise.
template <class F>
bool with_cast_type(DType t, F&& f) {
  if (t == DType::F16) {
    f.template operator()<__half>();
    return true;
  }
  return with_float_type(t, f);
}

// ---- GEGLU: x [M, 2N] = (hidden | gate) ----

// y [M, N]; u indexes packs of V along y (V divides N).
template <int V, class T>
__global__ void __launch_bounds__(kThreads)
    geglu_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t units, int64_t N) {
  for (int64_t u = global_thread(); u < units; u += grid_stride()) {
    const int64_t e = u * V, m = e / N, c = e % N;
    float h[V], g[V], out[V];
    load_f<V>(x + m * 2 * N + c, h);
    load_f<V>(x + m * 2 * N + N + c, g);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = h[i] * gelu_f(g[i]);
    store_f<V>(y + e, out);
  }
}

// dy [M, N] -> dx [M, 2N]: d hidden = dy gelu(gate), d gate = dy hidden gelu'(gate).
template <int V, class T>
__global__ void __launch_bounds__(kThreads)
    geglu_bwd_kernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, int64_t units,
                     int64_t N) {
  for (int64_t u = global_thread(); u < units; u += grid_stride()) {
    const int64_t e = u * V, m = e / N, c = e % N;
    float h[V], g[V], d[V], dh[V], dg[V];
    load_f<V>(x + m * 2 * N + c, h);
    load_f<V>(x + m * 2 * N + N + c, g);
    load_f<V>(dy + e, d);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      dh[i] = d[i] * gelu_f(g[i]);
      dg[i] = d[i] * h[i] * gelu_grad_f(g[i]);
    }
    store_f<V>(dx + m * 2 * N + c, dh);
    store_f<V>(dx + m * 2 * N + N + c, dg);
  }
}

// ---- broadcast add: x [B, N, C] += v [B, C]; u indexes packs of V along x (V divides C) ----

template <int V, class T>
__global__ void __launch_bounds__(kThreads)
    broadcast_add_kernel(T* __restrict__ x, const T* __restrict__ v, int64_t units, int64_t NC, int64_t C) {
  for (int64_t u = global_thread(); u < units; u += grid_stride()) {
    const int64_t e = u * V, b = e / NC, c = e % C;
    float xv[V], vv[V];
    load_f<V>(x + e, xv);
    load_f<V>(v + b * C + c, vv);
#pragma unroll
    for (int i = 0; i < V; ++i) xv[i] += vv[i];
    store_f<V>(x + e, xv);
  }
}

template <class T>
cudaError_t launch_broadcast_add(T* x, const T* v, int64_t B, int64_t N, int64_t C, cudaStream_t stream) {
  constexpr int V = pack_of<T>();
  const int64_t total = B * N * C;
  if (C % V == 0 && aligned(x, 16) && aligned(v, 16))
    return DB_LAUNCH((broadcast_add_kernel<V, T>), grid_for(total / V), dim3(kThreads), 0, stream, x, v,
                     total / V, N * C, C);
  return DB_LAUNCH((broadcast_add_kernel<1, T>), grid_for(total), dim3(kThreads), 0, stream, x, v, total,
                   N * C, C);
}

// ---- column sums: a [B][M, N] -> partial [B][chunks][N] -> out [B][N] ----

// grid (ceil(N / (32 V)), chunks, B), block (32, 8).
template <int V, class T>
__global__ void __launch_bounds__(kColLanes* kRowLanes)
    column_partial_kernel(const T* __restrict__ a, int64_t M, int64_t N, float* __restrict__ partial) {
  DB_SHARED(float[kRowLanes][kColLanes * V], lane_sums);
  const int64_t col = (int64_t(blockIdx.x) * kColLanes + threadIdx.x) * V;
  const int64_t r0 = int64_t(blockIdx.y) * kChunkRows;
  const int64_t r1 = M < r0 + kChunkRows ? M : r0 + kChunkRows;
  const T* ab = a + int64_t(blockIdx.z) * M * N;
  float s[V];
#pragma unroll
  for (int i = 0; i < V; ++i) s[i] = 0.f;
  if (col < N) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      float row[V];
      load_f<V>(ab + r * N + col, row);
#pragma unroll
      for (int i = 0; i < V; ++i) s[i] += row[i];
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) lane_sums[threadIdx.y][threadIdx.x * V + i] = s[i];
  __syncthreads();
  // All 256 threads finish the 32 V columns: thread t adds column t (and t + 256) over the 8 lanes.
  const int t = threadIdx.y * kColLanes + threadIdx.x;
  for (int j = t; j < kColLanes * V; j += kColLanes * kRowLanes) {
    const int64_t cj = int64_t(blockIdx.x) * kColLanes * V + j;
    if (cj >= N) continue;
    float total = lane_sums[0][j];
#pragma unroll
    for (int k = 1; k < kRowLanes; ++k) total += lane_sums[k][j];
    partial[(int64_t(blockIdx.z) * gridDim.y + blockIdx.y) * N + cj] = total;
  }
}

// out[b, n] (+)= sum over chunks, in chunk order.
template <class TO, bool kAccumulate>
__global__ void __launch_bounds__(kThreads)
    column_finish_kernel(const float* __restrict__ partial, int64_t chunks, int64_t N, int64_t BN, TO* out) {
  for (int64_t u = global_thread(); u < BN; u += grid_stride()) {
    const int64_t b = u / N, col = u % N;
    float s = 0.f;
    for (int64_t k = 0; k < chunks; ++k) s += partial[(b * chunks + k) * N + col];
    if constexpr (kAccumulate)
      out[u] = from_f<TO>(to_f(out[u]) + s);
    else
      out[u] = from_f<TO>(s);
  }
}

int64_t column_chunks(int64_t M) {
  return (M + kChunkRows - 1) / kChunkRows;
}

// partial [B][chunks(M)][N] from a [B][M, N].
template <class T>
cudaError_t launch_column_partial(const T* a, int64_t B, int64_t M, int64_t N, float* partial,
                                  cudaStream_t stream) {
  constexpr int V = pack_of<T>();
  const int64_t chunks = column_chunks(M);
  if (chunks > 65535 || B > 65535) return cudaErrorInvalidValue;
  const dim3 block(kColLanes, kRowLanes);
  if (N % V == 0 && aligned(a, 16)) {
    const dim3 grid(unsigned((N + kColLanes * V - 1) / (kColLanes * V)), unsigned(chunks), unsigned(B));
    return DB_LAUNCH((column_partial_kernel<V, T>), grid, block, 0, stream, a, M, N, partial);
  }
  const dim3 grid(unsigned((N + kColLanes - 1) / kColLanes), unsigned(chunks), unsigned(B));
  return DB_LAUNCH((column_partial_kernel<1, T>), grid, block, 0, stream, a, M, N, partial);
}

}  // namespace

cudaError_t fill(DType t, void* x, int64_t n, float value, cudaStream_t stream) {
  if (n < 0 || (n > 0 && !x)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  switch (t) {
    case DType::F32:
      return launch_fill<float>(x, n, value, stream);
    case DType::BF16:
      return launch_fill<__nv_bfloat16>(x, n, __float2bfloat16_rn(value), stream);
    case DType::F16:
      return launch_fill<__half>(x, n, __float2half_rn(value), stream);
    case DType::F64:
      return launch_fill<double>(x, n, double(value), stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t cast(DType src_t, const void* src, DType dst_t, void* dst, int64_t n, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (src_t == dst_t && (src_t == DType::F32 || src_t == DType::BF16 || src_t == DType::F16))
    return src == dst
               ? cudaSuccess
               : cudaMemcpyAsync(dst, src, size_t(n) * dtype_size(src_t), cudaMemcpyDeviceToDevice, stream);
  cudaError_t err = cudaErrorInvalidValue;
  with_cast_type(src_t, [&]<class TS>() {
    with_cast_type(dst_t, [&]<class TD>() {
      err = launch_map1(static_cast<const TS*>(src), static_cast<TD*>(dst), n, Identity{}, stream);
    });
  });
  return err;
}

cudaError_t activation_forward(DType t, const void* x, void* y, int64_t n, Act act, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (act == Act::None) return cast(t, x, t, y, n, stream);
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    if (act == Act::SiLU) err = launch_map1(xp, yp, n, ActForward<Act::SiLU>{}, stream);
    if (act == Act::GELU) err = launch_map1(xp, yp, n, ActForward<Act::GELU>{}, stream);
    if (act == Act::QuickGELU) err = launch_map1(xp, yp, n, ActForward<Act::QuickGELU>{}, stream);
  });
  return err;
}

cudaError_t activation_backward(DType t, const void* x, const void* dy, void* dx, int64_t n, Act act,
                                cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (act == Act::None) return cast(t, dy, t, dx, n, stream);
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    const T* xp = static_cast<const T*>(x);
    const T* dyp = static_cast<const T*>(dy);
    T* dxp = static_cast<T*>(dx);
    if (act == Act::SiLU) err = launch_map2(xp, dyp, dxp, n, ActBackward<Act::SiLU>{}, stream);
    if (act == Act::GELU) err = launch_map2(xp, dyp, dxp, n, ActBackward<Act::GELU>{}, stream);
    if (act == Act::QuickGELU) err = launch_map2(xp, dyp, dxp, n, ActBackward<Act::QuickGELU>{}, stream);
  });
  return err;
}

cudaError_t geglu_forward(DType t, const void* x, void* y, int64_t M, int64_t N, cudaStream_t stream) {
  if (M < 0 || N < 0) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    constexpr int V = pack_of<T>();
    const T* xp = static_cast<const T*>(x);
    T* yp = static_cast<T*>(y);
    if (N % V == 0 && aligned(xp, 16) && aligned(yp, 16))
      err = DB_LAUNCH((geglu_fwd_kernel<V, T>), grid_for(M * N / V), dim3(kThreads), 0, stream, xp, yp,
                      M * N / V, N);
    else
      err = DB_LAUNCH((geglu_fwd_kernel<1, T>), grid_for(M * N), dim3(kThreads), 0, stream, xp, yp, M * N, N);
  });
  return err;
}

cudaError_t geglu_backward(DType t, const void* x, const void* dy, void* dx, int64_t M, int64_t N,
                           cudaStream_t stream) {
  if (M < 0 || N < 0) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    constexpr int V = pack_of<T>();
    const T* xp = static_cast<const T*>(x);
    const T* dyp = static_cast<const T*>(dy);
    T* dxp = static_cast<T*>(dx);
    if (N % V == 0 && aligned(xp, 16) && aligned(dyp, 16) && aligned(dxp, 16))
      err = DB_LAUNCH((geglu_bwd_kernel<V, T>), grid_for(M * N / V), dim3(kThreads), 0, stream, xp, dyp, dxp,
                      M * N / V, N);
    else
      err = DB_LAUNCH((geglu_bwd_kernel<1, T>), grid_for(M * N), dim3(kThreads), 0, stream, xp, dyp, dxp,
                      M * N, N);
  });
  return err;
}

cudaError_t add(DType ta, const void* a, DType tb, const void* b, DType ty, void* y, int64_t n, float alpha,
                float beta, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(ta, [&]<class TA>() {
    with_float_type(tb, [&]<class TB>() {
      with_float_type(ty, [&]<class TY>() {
        err = launch_map2(static_cast<const TA*>(a), static_cast<const TB*>(b), static_cast<TY*>(y), n,
                          Axpby{alpha, beta}, stream);
      });
    });
  });
  return err;
}

cudaError_t scale(DType t, const void* x, void* y, int64_t n, float s, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    err = launch_map1(static_cast<const T*>(x), static_cast<T*>(y), n, Scale{s}, stream);
  });
  return err;
}

cudaError_t add_broadcast_forward(DType t, void* x, const void* v, int B, int64_t N, int C,
                                  cudaStream_t stream) {
  if (B < 0 || N < 0 || C < 0) return cudaErrorInvalidValue;
  if (int64_t(B) * N * C == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    err = launch_broadcast_add(static_cast<T*>(x), static_cast<const T*>(v), B, N, C, stream);
  });
  return err;
}

size_t add_broadcast_backward_workspace(int B, int64_t N, int C) {
  return size_t(B) * size_t(column_chunks(N)) * size_t(C) * sizeof(float);
}

cudaError_t add_broadcast_backward(DType t, const void* dy, void* dv, int B, int64_t N, int C,
                                   void* workspace, cudaStream_t stream) {
  if (B < 0 || N < 0 || C < 0) return cudaErrorInvalidValue;
  if (int64_t(B) * C == 0) return cudaSuccess;
  if (N > 0 && !workspace) return cudaErrorInvalidValue;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    float* partial = static_cast<float*>(workspace);
    err = N > 0 ? launch_column_partial(static_cast<const T*>(dy), B, N, C, partial, stream) : cudaSuccess;
    if (err == cudaSuccess)
      err = DB_LAUNCH((column_finish_kernel<T, false>), grid_for(int64_t(B) * C), dim3(kThreads), 0, stream,
                      partial, column_chunks(N), int64_t(C), int64_t(B) * C, static_cast<T*>(dv));
  });
  return err;
}

cudaError_t bias_add(DType t, void* y, const void* b, int64_t M, int C, cudaStream_t stream) {
  return add_broadcast_forward(t, y, b, 1, M, C, stream);
}

size_t column_sum_workspace(int64_t M, int64_t N) {
  return size_t(column_chunks(M)) * size_t(N) * sizeof(float);
}

cudaError_t column_sum_add(DType t, const void* a, int64_t M, int64_t N, float* out, void* workspace,
                           cudaStream_t stream) {
  if (M < 0 || N < 0) return cudaErrorInvalidValue;
  if (M == 0 || N == 0) return cudaSuccess;
  if (!workspace) return cudaErrorInvalidValue;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    float* partial = static_cast<float*>(workspace);
    err = launch_column_partial(static_cast<const T*>(a), 1, M, N, partial, stream);
    if (err == cudaSuccess)
      err = DB_LAUNCH((column_finish_kernel<float, true>), grid_for(N), dim3(kThreads), 0, stream, partial,
                      column_chunks(M), N, N, out);
  });
  return err;
}

}  // namespace db::kernels
