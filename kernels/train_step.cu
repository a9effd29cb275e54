// The training step's kernels: MSE loss + gradient, the gradient sum of squares, the clip coefficient
// with the non-finite check, and AdamW (contract: include/dreambooth/kernels/train_step.h; semantics:
// CpuOps in src/backend/cpu/train_step_ops.cpp).
//
// Launch configurations and why:
//   mse_partial_kernel  grid (ceil(n / 4096), S), 256 threads: a fixed 4096-element chunk per block, each
//                       thread a fixed stride, then a fixed shared-memory tree -> one f64 partial per
//                       (sample, chunk) in the workspace; mse_final_kernel (one thread per sample) adds a
//                       sample's partials in chunk order. Scalar loads: a sample's slice starts at s * n,
//                       which need not be 16-byte aligned, and the op moves ~64 KiB per sample
//                       (launch-bound).
//   sos_chunk_kernel    one thread per 64 Ki-element chunk (grid-stride, so any grid gives the same bits),
//                       summing its chunk sequentially in f64 exactly as CpuOps::sum_of_squares does, with
//                       float4 loads when x is 16-byte aligned; sos_final_kernel (1 thread) adds the chunk
//                       partials in order. Bit-identical to the CPU; the price is a sequential dependency
//                       chain of 64 Ki f64 adds per thread (~0.3 ms on an H100, memory-bound beyond ~1e9
//                       elements), acceptable once per optimizer step.
//   clip_check_kernel   one block of 256: every thread checks a stride of `check`, __syncthreads_and
//                       combines them, thread 0 adds sumsq in order and forms the coefficient in f64 as
//                       backend/ops.h clip_coefficient does (IEEE f64 sqrt and division on the device).
//   adamw_kernel        grid-stride over 4-element items, 256 threads, float4 loads/stores when every
//                       buffer is aligned (8-byte bf16x4 stores for the working copy), scalar otherwise.
//                       Every float operation is an explicit round-to-nearest intrinsic (__fmul_rn, ...)
//                       in CpuOps::adamw_step's order, so nvcc cannot contract a*b+c into an FMA and the
//                       result is bit-identical to the CPU (IEEE sqrt and division via __fsqrt_rn and
//                       __fdiv_rn, whatever -prec-sqrt/-prec-div say).
// f64 products of two floats are exact (24 + 24 bits < 53), so a contracted f64 FMA gives the same bits
// as the separate multiply and add: the f64 accumulations need no intrinsics.
//
// ptxas -v, sm_90a (no spills, no stack): adamw_kernel 45/48 registers (no working copy, scalar/float4),
// 46/48 (f32 working), 40/46 (bf16 working); sos_chunk_kernel 32/34; sos_final_kernel 20;
// mse_partial_kernel 32 (f32 and bf16), 2048 B smem; mse_final_kernel 25; clip_check_kernel 30.
#include <algorithm>
#include <cmath>

#include "dreambooth/backend/ops.h"
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/kernels/train_step.h"

namespace db::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMseChunk = 4096;     // elements of one sample per block
constexpr int64_t kSosChunk = 1 << 16;  // CpuOps::sum_of_squares' block: the same partials, same bits
constexpr unsigned kSosThreads = 128;

__device__ __forceinline__ float load_f32(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store_f32(float* p, int64_t i, float x) {
  p[i] = x;
}
__device__ __forceinline__ void store_f32(__nv_bfloat16* p, int64_t i, float x) {
  p[i] = __float2bfloat16_rn(x);
}

// ---- MSE -------------------------------------------------------------------------------------------

// pred, dpred [S, n] (T), target [S, n] f32, k [S] -> partial [S, chunks] f64 (sum of (pred - target)^2)
template <class T>
__global__ void __launch_bounds__(kThreads)
    mse_partial_kernel(const T* __restrict__ pred, const float* __restrict__ target,
                       const float* __restrict__ k, T* __restrict__ dpred, double* __restrict__ partial,
                       int64_t n) {
  DB_SHARED(double[kThreads], red);
  const int s = blockIdx.y;
  const int64_t chunk = blockIdx.x, begin = chunk * kMseChunk, end = min(n, begin + kMseChunk);
  const float ks = k[s];
  const int64_t base = int64_t(s) * n;
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const float d = __fsub_rn(load_f32(pred, base + i), target[base + i]);
    acc += double(d) * double(d);
    store_f32(dpred, base + i, __fmul_rn(ks, d));
  }
  red[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (int(threadIdx.x) < stride) red[threadIdx.x] += red[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[int64_t(s) * gridDim.x + chunk] = red[0];
}

// partial [S, chunks] f64 -> sample_mse [S] f32 = (sum in chunk order) / n
__global__ void mse_final_kernel(const double* __restrict__ partial, float* __restrict__ sample_mse, int S,
                                 int64_t chunks, int64_t n) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= S) return;
  double acc = 0;
  for (int64_t c = 0; c < chunks; ++c) acc += partial[int64_t(s) * chunks + c];
  sample_mse[s] = float(acc / double(n));
}

// ---- sum of squares --------------------------------------------------------------------------------

// x [n] f32 -> partial [ceil(n / 64 Ki)] f64, each chunk summed sequentially from 0.
template <bool kVec>
__global__ void __launch_bounds__(kSosThreads)
    sos_chunk_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ partial) {
  const int64_t nb = (n + kSosChunk - 1) / kSosChunk;
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < nb;
       b += int64_t(gridDim.x) * blockDim.x) {
    const int64_t begin = b * kSosChunk, end = min(n, begin + kSosChunk);
    double s = 0;
    int64_t i = begin;
    if constexpr (kVec) {
      // 4 float4 in flight per thread; the adds stay in element order.
      const float4* x4 = reinterpret_cast<const float4*>(x);
      for (; i + 16 <= end; i += 16) {
        float4 q[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) q[j] = __ldg(x4 + i / 4 + j);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          s += double(q[j].x) * q[j].x;
          s += double(q[j].y) * q[j].y;
          s += double(q[j].z) * q[j].z;
          s += double(q[j].w) * q[j].w;
        }
      }
    }
    for (; i < end; ++i) s += double(x[i]) * x[i];
    partial[b] = s;
  }
}

__global__ void sos_final_kernel(const double* __restrict__ partial, int64_t nb, double* __restrict__ out) {
  double total = 0;
  for (int64_t b = 0; b < nb; ++b) total += partial[b];
  *out = total;
}

// ---- clip coefficient ------------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreads)
    clip_check_kernel(const double* __restrict__ sumsq, int n_sumsq, const float* __restrict__ check,
                      int64_t n_check, float max_norm, float* __restrict__ coef) {
  bool finite = true;
  for (int64_t i = threadIdx.x; i < n_check; i += kThreads) finite = finite && isfinite(check[i]);
  const bool all_finite = __syncthreads_and(finite);
  if (threadIdx.x != 0) return;
  double ss = 0;
  for (int i = 0; i < n_sumsq; ++i) ss += sumsq[i];
  const double norm = sqrt(ss);
  float c = 1.f;  // backend/ops.h clip_coefficient
  if (max_norm > 0.f) {
    const double q = double(max_norm) / (norm + 1e-6);
    c = float(q < 1.0 ? q : 1.0);
  }
  coef[0] = c;
  coef[1] = all_finite && isfinite(norm) ? 1.f : 0.f;
}

// ---- AdamW -----------------------------------------------------------------------------------------

// CpuOps::adamw_step on one element, the same operations in the same order, each rounded once.
__device__ __forceinline__ void adamw_one(float& p, float grad, float& m, float& v, const AdamWScalars& s,
                                          float scale) {
  const float g = __fmul_rn(grad, scale);
  const float pd = __fmul_rn(p, s.decay);
  // torch.lerp(m, g, w): weight < 0.5 uses m + w * (g - m), else g - (g - m) * (1 - w)
  const float mi = s.w1 < 0.5f ? __fadd_rn(m, __fmul_rn(s.w1, __fsub_rn(g, m)))
                               : __fsub_rn(g, __fmul_rn(__fsub_rn(g, m), __fsub_rn(1.f, s.w1)));
  const float vi = __fadd_rn(__fmul_rn(v, s.beta2), __fmul_rn(__fmul_rn(s.w2, g), g));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
  p = __fsub_rn(pd, __fmul_rn(s.step_size, __fdiv_rn(mi, denom)));
  m = mi;
  v = vi;
}

struct NoWorking {};

__device__ __forceinline__ void store_working(NoWorking*, int64_t, const float4&) {}
__device__ __forceinline__ void store_working(float* w, int64_t i, const float4& p) {
  reinterpret_cast<float4*>(w)[i / 4] = p;
}
__device__ __forceinline__ void store_working(__nv_bfloat16* w, int64_t i, const float4& p) {
  const auto h = [](float x) { return unsigned(__bfloat16_as_ushort(__float2bfloat16_rn(x))); };
  reinterpret_cast<uint2*>(w)[i / 4] = make_uint2(h(p.x) | h(p.y) << 16, h(p.z) | h(p.w) << 16);
}
__device__ __forceinline__ void store_working1(NoWorking*, int64_t, float) {}
__device__ __forceinline__ void store_working1(float* w, int64_t i, float p) {
  w[i] = p;
}
__device__ __forceinline__ void store_working1(__nv_bfloat16* w, int64_t i, float p) {
  w[i] = __float2bfloat16_rn(p);
}

// master, grad, m, v [n] f32, working [n] W (or none); coef [2] f32.
template <class W, bool kVec>
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* __restrict__ master, const float* __restrict__ grad, float* __restrict__ m,
                 float* __restrict__ v, W* __restrict__ working, int64_t n, AdamWScalars s,
                 const float* __restrict__ coef) {
  if (coef[1] == 0.f) return;  // non-finite step: skipped, nothing written
  const float scale = coef[0];
  const int64_t items = (n + 3) / 4;
  for (int64_t it = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; it < items;
       it += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = it * 4;
    if (kVec && i + 4 <= n) {
      float4 p = reinterpret_cast<float4*>(master)[it], mm = reinterpret_cast<float4*>(m)[it],
             vv = reinterpret_cast<float4*>(v)[it];
      const float4 g = __ldg(reinterpret_cast<const float4*>(grad) + it);
      adamw_one(p.x, g.x, mm.x, vv.x, s, scale);
      adamw_one(p.y, g.y, mm.y, vv.y, s, scale);
      adamw_one(p.z, g.z, mm.z, vv.z, s, scale);
      adamw_one(p.w, g.w, mm.w, vv.w, s, scale);
      reinterpret_cast<float4*>(master)[it] = p;
      reinterpret_cast<float4*>(m)[it] = mm;
      reinterpret_cast<float4*>(v)[it] = vv;
      store_working(working, i, p);
    } else {
      for (int64_t j = i; j < min(n, i + 4); ++j) {
        float p = master[j], mm = m[j], vv = v[j];
        adamw_one(p, grad[j], mm, vv, s, scale);
        master[j] = p;
        m[j] = mm;
        v[j] = vv;
        store_working1(working, j, p);
      }
    }
  }
}

bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

template <class W>
cudaError_t launch_adamw(float* master, const float* grad, float* m, float* v, W* working, int64_t n,
                         const AdamWScalars& s, const float* coef, cudaStream_t stream) {
  const int64_t items = (n + 3) / 4;
  const unsigned blocks = unsigned(std::min<int64_t>((items + kThreads - 1) / kThreads, int64_t(1) << 20));
  const bool vec = aligned(master, 16) && aligned(grad, 16) && aligned(m, 16) && aligned(v, 16) &&
                   aligned(working, 4 * sizeof(std::conditional_t<std::is_same_v<W, NoWorking>, char, W>));
  if (vec)
    return DB_LAUNCH((adamw_kernel<W, true>), dim3(blocks), dim3(kThreads), 0, stream, master, grad, m, v,
                     working, n, s, coef);
  return DB_LAUNCH((adamw_kernel<W, false>), dim3(blocks), dim3(kThreads), 0, stream, master, grad, m, v,
                   working, n, s, coef);
}

}  // namespace

size_t mse_loss_workspace(int S, int64_t n) {
  return size_t(S) * size_t((n + kMseChunk - 1) / kMseChunk) * sizeof(double);
}

cudaError_t mse_loss_forward_backward(DType t, const void* pred, const float* target, const float* k,
                                      void* dpred, float* sample_mse, int S, int64_t n, void* workspace,
                                      cudaStream_t stream) {
  if (S < 0 || n < 0 || S > 65535 || (t != DType::F32 && t != DType::BF16)) return cudaErrorInvalidValue;
  if (S == 0) return cudaSuccess;
  const int64_t chunks = (n + kMseChunk - 1) / kMseChunk;
  auto* partial = static_cast<double*>(workspace);
  if (chunks > 0) {
    const dim3 grid{unsigned(chunks), unsigned(S)};
    const cudaError_t err =
        t == DType::F32
            ? DB_LAUNCH((mse_partial_kernel<float>), grid, dim3(kThreads), 0, stream,
                        static_cast<const float*>(pred), target, k, static_cast<float*>(dpred), partial, n)
            : DB_LAUNCH((mse_partial_kernel<__nv_bfloat16>), grid, dim3(kThreads), 0, stream,
                        static_cast<const __nv_bfloat16*>(pred), target, k,
                        static_cast<__nv_bfloat16*>(dpred), partial, n);
    if (err != cudaSuccess) return err;
  }
  return DB_LAUNCH(mse_final_kernel, dim3((S + 31) / 32), dim3(32), 0, stream, partial, sample_mse, S, chunks,
                   n);
}

size_t sum_of_squares_workspace(int64_t n) {
  return size_t(std::max<int64_t>((n + kSosChunk - 1) / kSosChunk, 0)) * sizeof(double);
}

namespace detail {
cudaError_t sum_of_squares_shaped(const float* x, int64_t n, double* out, void* workspace, unsigned blocks,
                                  unsigned threads, cudaStream_t stream) {
  if (n < 0 || blocks == 0 || threads == 0 || threads > kSosThreads) return cudaErrorInvalidValue;
  const int64_t nb = (n + kSosChunk - 1) / kSosChunk;
  auto* partial = static_cast<double*>(workspace);
  if (nb > 0) {
    const cudaError_t err =
        aligned(x, 16)
            ? DB_LAUNCH((sos_chunk_kernel<true>), dim3(blocks), dim3(threads), 0, stream, x, n, partial)
            : DB_LAUNCH((sos_chunk_kernel<false>), dim3(blocks), dim3(threads), 0, stream, x, n, partial);
    if (err != cudaSuccess) return err;
  }
  return DB_LAUNCH(sos_final_kernel, dim3(1), dim3(1), 0, stream, static_cast<const double*>(partial), nb,
                   out);
}
}  // namespace detail

cudaError_t sum_of_squares(const float* x, int64_t n, double* out, void* workspace, cudaStream_t stream) {
  const int64_t nb = std::max<int64_t>((n + kSosChunk - 1) / kSosChunk, 1);
  const unsigned threads = unsigned(std::min<int64_t>(kSosThreads, (nb + 31) / 32 * 32));
  return detail::sum_of_squares_shaped(x, n, out, workspace, unsigned((nb + threads - 1) / threads), threads,
                                       stream);
}

cudaError_t clip_and_check(const double* sumsq, int n_sumsq, const float* check, int64_t n_check,
                           float max_norm, float* coef, cudaStream_t stream) {
  if (n_sumsq < 0 || n_check < 0) return cudaErrorInvalidValue;
  return DB_LAUNCH(clip_check_kernel, dim3(1), dim3(kThreads), 0, stream, sumsq, n_sumsq, check, n_check,
                   max_norm, coef);
}

AdamWScalars adamw_scalars(const AdamWStep& c) {  // as CpuOps::adamw_step forms them
  AdamWScalars s;
  s.decay = float(1.0 - c.lr * c.weight_decay);
  s.w1 = float(1.0 - c.beta1);
  s.w2 = float(1.0 - c.beta2);
  s.beta2 = float(c.beta2);
  s.eps = float(c.eps);
  s.step_size = float(c.lr / (1.0 - std::pow(c.beta1, double(c.step))));
  s.bc2_sqrt = float(std::sqrt(1.0 - std::pow(c.beta2, double(c.step))));
  return s;
}

cudaError_t adamw_step(float* master, const float* grad, float* m, float* v, DType working_t, void* working,
                       int64_t n, const AdamWScalars& s, const float* coef, cudaStream_t stream) {
  if (n < 0) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  if (!working) return launch_adamw(master, grad, m, v, static_cast<NoWorking*>(nullptr), n, s, coef, stream);
  if (working_t == DType::F32)
    return launch_adamw(master, grad, m, v, static_cast<float*>(working), n, s, coef, stream);
  if (working_t == DType::BF16)
    return launch_adamw(master, grad, m, v, static_cast<__nv_bfloat16*>(working), n, s, coef, stream);
  return cudaErrorInvalidValue;
}

}  // namespace db::kernels
