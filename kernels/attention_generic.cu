// The generic attention path (attention_paths.h): any head dim D in [1, 512], F32 and BF16, any Tq/Tk,
// causal. The correct fallback on a GPU, the f32 check mode's path, and the path whole training steps take
// in the emulated binary, which is why it is shaped for the emulator: one thread per row with all of the
// row's work (the emulator pays per thread and per barrier, ~60 ns each, ~150 ns per shuffle lane), two
// barriers per tile, no shuffles.
//
// Launch configuration, every kernel: grid (ceil(rows / threads), B*H), block 32 threads when the rows
// fit, else 64; thread t of block x owns row x*threads + t of head (b, h) = divmod(blockIdx.y, H).
//   forward  rows = queries: fp32 online softmax over keys; K and V tiles of `tile` rows staged as f32 in
//            dynamic shared memory and shared by the block's queries; lse = m + log(l).
//   dq       rows = queries: Dr = dO.O (saved to the workspace), p = exp(s - lse), dS = p (dO.v - Dr),
//            dQ = scale sum_j dS k_j, over the same K/V tiles.
//   dkv      rows = keys: over tiles of Q and dO (with their lse and Dr), in query order,
//            dV = sum_i p dO_i, dK = scale sum_i dS q_i. Each output element has one owner thread and
//            a fixed summation order: deterministic without atomics.
// tile = min(64, 4096 / D) rows, so the two staged tiles take at most 32 KiB (+ 512 B for dkv's lse/Dr).
// Per-thread vectors (q, dO, accumulators) are sized by the D bucket DMAX in {32, 64, 128, 256, 512}
// with loops bounded by the real D: registers (fully unrolled, predicated) while they fit -- forward
// DMAX <= 64 (2 vectors), dq/dkv DMAX <= 32 (3 and 4 vectors) -- else local memory (a stack frame, no
// spills), which is what a fallback can afford.
//
// __launch_bounds__(64, 1): with the plain bound ptxas capped the unrolled buckets at 96-168 registers and
// spilled 4-12 bytes (the per-d guards); with the min-blocks hint it uses what it needs, no spills.
// ptxas -v, sm_90a (registers f32/bf16; 0 spill bytes everywhere; 1 barrier; dynamic smem 2*tile*D*4
// bytes <= 32 KiB, dkv + 2*tile*4):
//   attn_fwd      DMAX 32: 96/105 regs | 64: 161/167 regs | 128/256/512: 64 regs + 1/2/4 KiB stack frame
//   attn_bwd_dq   DMAX 32: 128/137 regs | 64/128/256/512: 88 regs + 0.75/1.5/3/6 KiB stack frame
//   attn_bwd_dkv  DMAX 32: 159/168 regs | 64/128/256/512: 85 regs + 1/2/4/8 KiB stack frame
// Occupancy (64-thread blocks): the register buckets fit 6-10 blocks (12-20 warps) per SM; the
// local-memory buckets 6-7 (smem bound for D >= 64: 32 KiB per block). A fallback, not the fast path.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/kernels/attention_paths.h"

namespace db::kernels {
namespace {

constexpr int kMaxThreads = 64;
constexpr int kTileFloats = 4096;  // rows x D of one staged tile

__device__ __forceinline__ float to_f32(float x) {
  return x;
}
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// f(d) for d in [0, D): fully unrolled over the bucket (so per-thread arrays stay in registers) when
// kUnroll, else a plain loop (the arrays live in local memory). The break, not a guard, so that g++
// (the emulated build, which does not unroll) stops at D instead of walking the whole bucket.
template <int DMAX, bool kUnroll, class F>
__device__ __forceinline__ void for_d(int D, F&& f) {
  if constexpr (kUnroll) {
#pragma unroll
    for (int d = 0; d < DMAX; ++d) {
      if (d >= D) break;
      f(d);
    }
  } else {
    for (int d = 0; d < D; ++d) f(d);
  }
}

// 16 bytes of elements to f32: 4 floats, or 8 bf16 (a bf16 is the high half of its f32).
__device__ __forceinline__ void unpack16(const float* p, float* o) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  o[0] = x.x, o[1] = x.y, o[2] = x.z, o[3] = x.w;
}
__device__ __forceinline__ void unpack16(const __nv_bfloat16* p, float* o) {
  const uint4 x = *reinterpret_cast<const uint4*>(p);
  const unsigned w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
  for (int u = 0; u < 4; ++u) {
    o[2 * u] = __uint_as_float(w[u] << 16);
    o[2 * u + 1] = __uint_as_float(w[u] & 0xffff0000u);
  }
}

// dst [n, D] (f32) = rows [r0, r0 + n) of src, a head's [T, ld] view; all threads of the block take part.
// vec: 16-byte loads (the host checked D, ld and the base pointer).
template <class T>
__device__ void stage_rows(float* dst, const T* src, int r0, int n, int D, int ld, bool vec) {
  constexpr int V = 16 / sizeof(T);
  if (vec) {
    const int per_row = D / V, total = n * per_row;
    for (int c = threadIdx.x; c < total; c += blockDim.x) {
      const int r = c / per_row, d = (c - r * per_row) * V;
      unpack16(src + size_t(r0 + r) * ld + d, dst + r * D + d);
    }
  } else {
    const int total = n * D;
    for (int c = threadIdx.x; c < total; c += blockDim.x) {
      const int r = c / D, d = c - r * D;
      dst[c] = to_f32(src[size_t(r0 + r) * ld + d]);
    }
  }
}

// q, out [B, Tq, H*D]; k, v [B, Tk, H*D]; lse [B, H, Tq] or null.
template <int DMAX, class T>
__global__ void __launch_bounds__(kMaxThreads, 1)
    attn_fwd(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, T* __restrict__ out,
             float* __restrict__ lse, int H, int Tq, int Tk, int D, float scale, bool causal, int tile,
             bool vec) {
  constexpr bool kReg = DMAX <= 64;
  DB_DYNAMIC_SMEM(float, smem);
  float* ks = smem;             // [tile, D]
  float* vs = smem + tile * D;  // [tile, D]
  const int bh = blockIdx.y, b = bh / H, h = bh - b * H, HD = H * D;
  const int row0 = blockIdx.x * blockDim.x, i = row0 + threadIdx.x;
  const bool active = i < Tq;
  const T* qrow = q + (size_t(b) * Tq + (active ? i : 0)) * HD + size_t(h) * D;
  const size_t koff = size_t(b) * Tk * HD + size_t(h) * D;

  float qr[DMAX], acc[DMAX];
  for_d<DMAX, kReg>(D, [&](int d) {
    qr[d] = active ? to_f32(qrow[d]) : 0.f;
    acc[d] = 0.f;
  });
  float m = -INFINITY, l = 0.f;
  const int kend = causal ? min(Tk, min(Tq, row0 + int(blockDim.x))) : Tk;  // keys any row here sees
  const int jend = causal ? min(Tk, i + 1) : Tk;                            // keys this row sees
  for (int j0 = 0; j0 < kend; j0 += tile) {
    const int n = min(tile, kend - j0);
    if (j0 > 0) __syncthreads();  // the previous tile is consumed
    stage_rows(ks, k + koff, j0, n, D, HD, vec);
    stage_rows(vs, v + koff, j0, n, D, HD, vec);
    __syncthreads();
    if (!active) continue;
    const int nj = min(n, jend - j0);
    for (int jj = 0; jj < nj; ++jj) {
      const float* kr = ks + jj * D;
      const float* vr = vs + jj * D;
      float s = 0.f;
      for_d<DMAX, kReg>(D, [&](int d) { s += qr[d] * kr[d]; });
      s *= scale;
      if (s > m) {  // new running max: rescale what was summed against the old one
        const float c = expf(m - s);
        l *= c;
        for_d<DMAX, kReg>(D, [&](int d) { acc[d] *= c; });
        m = s;
      }
      const float p = expf(s - m);
      l += p;
      for_d<DMAX, kReg>(D, [&](int d) { acc[d] += p * vr[d]; });
    }
  }
  if (!active) return;
  T* orow = out + (size_t(b) * Tq + i) * HD + size_t(h) * D;
  const float inv = 1.f / l;
  for_d<DMAX, kReg>(D, [&](int d) { orow[d] = from_f32<T>(acc[d] * inv); });
  if (lse) lse[size_t(bh) * Tq + i] = m + logf(l);
}

// One thread per query row: Dr = dO.O (to drow [B, H, Tq]) and dq [B, Tq, H*D].
template <int DMAX, class T>
__global__ void __launch_bounds__(kMaxThreads, 1)
    attn_bwd_dq(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                const T* __restrict__ v, const T* __restrict__ out, const float* __restrict__ lse,
                float* __restrict__ drow, T* __restrict__ dq, int H, int Tq, int Tk, int D, float scale,
                bool causal, int tile, bool vec) {
  constexpr bool kReg = DMAX <= 32;
  DB_DYNAMIC_SMEM(float, smem);
  float* ks = smem;             // [tile, D]
  float* vs = smem + tile * D;  // [tile, D]
  const int bh = blockIdx.y, b = bh / H, h = bh - b * H, HD = H * D;
  const int row0 = blockIdx.x * blockDim.x, i = row0 + threadIdx.x;
  const bool active = i < Tq;
  const size_t qoff = (size_t(b) * Tq + (active ? i : 0)) * HD + size_t(h) * D;
  const size_t koff = size_t(b) * Tk * HD + size_t(h) * D;

  float qr[DMAX], dor[DMAX], acc[DMAX];
  double dr = 0;  // once per row: as the CPU reference, in double
  for_d<DMAX, kReg>(D, [&](int d) {
    qr[d] = active ? to_f32(q[qoff + d]) : 0.f;
    dor[d] = active ? to_f32(dout[qoff + d]) : 0.f;
    if (active) dr += double(dor[d]) * double(to_f32(out[qoff + d]));
    acc[d] = 0.f;
  });
  const float Dr = float(dr);
  const float L = active ? lse[size_t(bh) * Tq + i] : 0.f;
  if (active) drow[size_t(bh) * Tq + i] = Dr;
  const int kend = causal ? min(Tk, min(Tq, row0 + int(blockDim.x))) : Tk;
  const int jend = causal ? min(Tk, i + 1) : Tk;
  for (int j0 = 0; j0 < kend; j0 += tile) {
    const int n = min(tile, kend - j0);
    if (j0 > 0) __syncthreads();
    stage_rows(ks, k + koff, j0, n, D, HD, vec);
    stage_rows(vs, v + koff, j0, n, D, HD, vec);
    __syncthreads();
    if (!active) continue;
    const int nj = min(n, jend - j0);
    for (int jj = 0; jj < nj; ++jj) {
      const float* kr = ks + jj * D;
      const float* vr = vs + jj * D;
      float s = 0.f, dp = 0.f;
      for_d<DMAX, kReg>(D, [&](int d) {
        s += qr[d] * kr[d];
        dp += dor[d] * vr[d];
      });
      const float ds = expf(scale * s - L) * (dp - Dr);
      for_d<DMAX, kReg>(D, [&](int d) { acc[d] += ds * kr[d]; });
    }
  }
  if (!active) return;
  T* dqrow = dq + qoff;
  for_d<DMAX, kReg>(D, [&](int d) { dqrow[d] = from_f32<T>(scale * acc[d]); });
}

// One thread per key row: dk, dv [B, Tk, H*D], from q, dout and the saved lse, drow [B, H, Tq].
template <int DMAX, class T>
__global__ void __launch_bounds__(kMaxThreads, 1)
    attn_bwd_dkv(const T* __restrict__ dout, const T* __restrict__ q, const T* __restrict__ k,
                 const T* __restrict__ v, const float* __restrict__ lse, const float* __restrict__ drow,
                 T* __restrict__ dk, T* __restrict__ dv, int H, int Tq, int Tk, int D, float scale,
                 bool causal, int tile, bool vec) {
  constexpr bool kReg = DMAX <= 32;
  DB_DYNAMIC_SMEM(float, smem);
  float* qs = smem;                 // [tile, D]
  float* dos = smem + tile * D;     // [tile, D]
  float* ls = smem + 2 * tile * D;  // [tile]
  float* drs = ls + tile;           // [tile]
  const int bh = blockIdx.y, b = bh / H, h = bh - b * H, HD = H * D;
  const int row0 = blockIdx.x * blockDim.x, j = row0 + threadIdx.x;
  const bool active = j < Tk;
  const size_t koff = (size_t(b) * Tk + (active ? j : 0)) * HD + size_t(h) * D;
  const size_t qoff = size_t(b) * Tq * HD + size_t(h) * D;

  float kr[DMAX], vr[DMAX], dka[DMAX], dva[DMAX];
  for_d<DMAX, kReg>(D, [&](int d) {
    kr[d] = active ? to_f32(k[koff + d]) : 0.f;
    vr[d] = active ? to_f32(v[koff + d]) : 0.f;
    dka[d] = 0.f;
    dva[d] = 0.f;
  });
  const int istart = causal ? row0 : 0;  // causal: queries i >= j only
  for (int i0 = istart; i0 < Tq; i0 += tile) {
    const int n = min(tile, Tq - i0);
    if (i0 > istart) __syncthreads();  // the previous tile is consumed
    stage_rows(qs, q + qoff, i0, n, D, HD, vec);
    stage_rows(dos, dout + qoff, i0, n, D, HD, vec);
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
      ls[r] = lse[size_t(bh) * Tq + i0 + r];
      drs[r] = drow[size_t(bh) * Tq + i0 + r];
    }
    __syncthreads();
    if (!active) continue;
    for (int r = causal ? max(0, j - i0) : 0; r < n; ++r) {
      const float* qi = qs + r * D;
      const float* doi = dos + r * D;
      float s = 0.f, dp = 0.f;
      for_d<DMAX, kReg>(D, [&](int d) {
        s += qi[d] * kr[d];
        dp += doi[d] * vr[d];
      });
      const float p = expf(scale * s - ls[r]);
      const float ds = p * (dp - drs[r]);
      for_d<DMAX, kReg>(D, [&](int d) {
        dva[d] += p * doi[d];
        dka[d] += ds * qi[d];
      });
    }
  }
  if (!active) return;
  T* dkrow = dk + koff;
  T* dvrow = dv + koff;
  for_d<DMAX, kReg>(D, [&](int d) {
    dkrow[d] = from_f32<T>(scale * dka[d]);
    dvrow[d] = from_f32<T>(dva[d]);
  });
}

int tile_rows(int D) {
  return std::min(64, std::max(1, kTileFloats / D));
}
int block_threads(int rows) {
  return rows <= 32 ? 32 : kMaxThreads;
}
dim3 grid_for(int rows, int B, int H) {
  const int t = block_threads(rows);
  return dim3(unsigned((rows + t - 1) / t), unsigned(B * H));
}
bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// f.template operator()<T, DMAX>() for the element type and the head-dim bucket.
template <class T, class F>
cudaError_t with_bucket(int D, F& f) {
  if (D <= 32) return f.template operator()<T, 32>();
  if (D <= 64) return f.template operator()<T, 64>();
  if (D <= 128) return f.template operator()<T, 128>();
  if (D <= 256) return f.template operator()<T, 256>();
  return f.template operator()<T, 512>();
}
template <class F>
cudaError_t with_types(DType t, int D, F&& f) {
  if (t == DType::F32) return with_bucket<float>(D, f);
  if (t == DType::BF16) return with_bucket<__nv_bfloat16>(D, f);
  return cudaErrorInvalidValue;
}

bool shape_ok(int B, int H, int Tq, int Tk, int D) {
  return B >= 0 && H >= 1 && Tq >= 0 && Tk >= 1 && D >= 1 && D <= 512 && int64_t(B) * H <= 65535 &&
         int64_t(H) * D <= (int64_t(1) << 30);
}

}  // namespace

size_t attention_generic_forward_workspace(int B, int H, int Tq, int Tk, int D) {
  return 0;
}

cudaError_t attention_generic_forward(DType t, const void* q, const void* k, const void* v, void* out,
                                      float* lse, int B, int H, int Tq, int Tk, int D, float scale,
                                      bool causal, void* workspace, cudaStream_t stream) {
  if (!shape_ok(B, H, Tq, Tk, D)) return cudaErrorInvalidValue;
  if (B == 0 || Tq == 0) return cudaSuccess;
  if (!q || !k || !v || !out) return cudaErrorInvalidValue;
  const int tile = tile_rows(D);
  const size_t smem = size_t(2) * tile * D * sizeof(float);
  return with_types(t, D, [&]<class T, int DMAX>() {
    constexpr int V = 16 / sizeof(T);
    const bool vec = D % V == 0 && aligned16(k) && aligned16(v);
    return DB_LAUNCH((attn_fwd<DMAX, T>), grid_for(Tq, B, H), dim3(block_threads(Tq)), smem, stream,
                     static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v),
                     static_cast<T*>(out), lse, H, Tq, Tk, D, scale, causal, tile, vec);
  });
}

size_t attention_generic_backward_workspace(int B, int H, int Tq, int Tk, int D) {
  return size_t(std::max(B, 0)) * size_t(std::max(H, 0)) * size_t(std::max(Tq, 0)) * sizeof(float);
}

cudaError_t attention_generic_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                                       const void* out, const float* lse, void* dq, void* dk, void* dv, int B,
                                       int H, int Tq, int Tk, int D, float scale, bool causal,
                                       void* workspace, cudaStream_t stream) {
  if (!shape_ok(B, H, Tq, Tk, D)) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  if (!k || !v || !dk || !dv) return cudaErrorInvalidValue;
  if (Tq > 0 && (!dout || !q || !out || !lse || !dq || !workspace)) return cudaErrorInvalidValue;
  float* drow = static_cast<float*>(workspace);  // [B, H, Tq]: Dr = rowsum(dO o O), dq pass -> dkv pass
  const int tile = tile_rows(D);
  return with_types(t, D, [&]<class T, int DMAX>() {
    constexpr int V = 16 / sizeof(T);
    const bool vec = D % V == 0 && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(dout);
    if (Tq > 0) {
      const cudaError_t e = DB_LAUNCH(
          (attn_bwd_dq<DMAX, T>), grid_for(Tq, B, H), dim3(block_threads(Tq)),
          size_t(2) * tile * D * sizeof(float), stream, static_cast<const T*>(dout), static_cast<const T*>(q),
          static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(out), lse, drow,
          static_cast<T*>(dq), H, Tq, Tk, D, scale, causal, tile, vec);
      if (e != cudaSuccess) return e;
    }
    return DB_LAUNCH((attn_bwd_dkv<DMAX, T>), grid_for(Tk, B, H), dim3(block_threads(Tk)),
                     size_t(2) * tile * (D + 1) * sizeof(float), stream, static_cast<const T*>(dout),
                     static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), lse,
                     static_cast<const float*>(drow), static_cast<T*>(dk), static_cast<T*>(dv), H, Tq, Tk, D,
                     scale, causal, tile, vec);
  });
}

}  // namespace db::kernels
