// Tensor-core flash attention, backward (issue 13): FlashAttention-2's algorithm, deterministic.
// Forward and the shared helpers: attention_mma.cu, attention_mma_common.cuh.
//
// Three launches, no float atomics (every output element is written by exactly one thread, its sum
// taken in a fixed order):
//   1. attn_bwd_dot_kernel: Dr [B, H, Tq] = rowsum(dO o O) in f32 (the workspace), a thread per row.
//   2. attn_bwd_dkdv_kernel: grid (ceil(Tk / 64), H, B), 4 warps x 16 keys. K and V stay in shared
//      memory; every query tile (causal: from the first with a query >= the block's first key) streams
//      through double-buffered Q, dO, lse and Dr tiles:  S^T = K Q^T, P^T = exp2(S^T scale log2e - lse
//      log2e), dV += P^T dO, dP^T = V dO^T, dS^T = P^T o (dP^T - Dr), dK += dS^T Q; dK *= scale at the end.
//   3. attn_bwd_dq_kernel: grid (ceil(Tq / 64), H, B), 4 warps x 16 queries, streaming K, V tiles:
//      S = Q K^T, P, dP = dO V^T, dS = P o (dP - Dr), dQ += dS K; dQ *= scale.
// Streamed tiles are 64 rows for D <= 80 and 32 for D = 160, where dK + dV accumulators alone hold 160
// fp32 registers per thread and 64-row score tiles would spill.
// Dynamic shared memory (2 x 64 resident rows + 2 buffers x 2 streamed tiles, rows of (DP + 8) bf16, and
// 2 x 2 x rows floats of lse/Dr), the same for both kernels: 43 KiB (D 40), 55 (64), 67 (80), 84.5 (160).
//
// ptxas -v, sm_90a (CUDA 13.0, -O3; no spills, also none for sm_80); blocks per H100/H200 SM (64 K registers,
// 228 KiB shared memory), the smaller of the register and shared-memory limits:
//   dK/dV: D 40: 162 registers -> 3 blocks; D 64: 168 -> 3; D 80: 222 -> 2; D 160: 255 -> 2
//   dQ:    D 40: 133 registers -> 3 blocks; D 64: 160 -> 3; D 80: 167 -> 3; D 160: 182 -> 2
//   Dr pre-pass: 26 registers, no shared memory.
// D = 160's dK/dV sits at the 255-register ceiling with no spill; a change there must re-check ptxas.
#include <initializer_list>

#include "attention_mma_common.cuh"
#include "dreambooth/kernels/attention_paths.h"

namespace db::kernels {
namespace attn_mma {
namespace {

constexpr int kBr = 64;  // resident rows per block (keys in dK/dV, queries in dQ)

template <int D>
constexpr int kStreamRows = D > 96 ? 32 : 64;
template <int D>
constexpr int bwd_smem_bytes() {
  return (2 * kBr + 4 * kStreamRows<D>)*stride(D) * int(sizeof(bf16)) + 4 * kStreamRows<D> * 4;
}

// dout, out [B, Tq, H*D] -> dr [B, H, Tq] (f32, products of bf16 values summed in f32 over d in order).
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dot_kernel(const bf16* dout, const bf16* out, float* dr, int H, int Tq, int D, int rows) {
  const int r = blockIdx.x * kThreads + threadIdx.x;
  if (r >= rows) return;
  const int i = r % Tq, h = r / Tq % H, b = r / Tq / H;
  const size_t off = (size_t(b) * Tq + i) * H * D + size_t(h) * D;
  float s = 0.f;
  for (int d = 0; d < D; d += 2) {
    const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + off + d));
    const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + off + d));
    s += x.x * y.x + x.y * y.y;
  }
  dr[r] = s;
}

// Floats [r0, r0 + R) of a row vector into s (zero past T): the lse and Dr slices of a query tile.
template <int R>
__device__ __forceinline__ void load_row_slice(float* s, const float* g, int r0, int T) {
  for (int i = threadIdx.x; i < R; i += kThreads) {
    const bool in = r0 + i < T;
    ptx::cp_async_ca_zfill<4>(s + i, g + (in ? r0 + i : 0), in ? 4 : 0);
  }
}

template <int D, int N>
__device__ __forceinline__ void store_rows(bf16* g, int ld, const float (&acc)[N][4], float mul, int row0,
                                           int T, int t) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    if (row >= T) continue;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const int col = 8 * n + 2 * t;
      if (col < D)
        *reinterpret_cast<uint32_t*>(g + size_t(row) * ld + col) =
            pack_bf16(acc[n][2 * r] * mul, acc[n][2 * r + 1] * mul);
    }
  }
}

struct BwdArgs {
  const bf16 *dout, *q, *k, *v, *out;
  const float *lse, *dr;
  bf16 *dq, *dk, *dv;
  int H, Tq, Tk;
  float scale, scale_log2;
  bool causal, vec;
};

template <int D>
__global__ void __launch_bounds__(kThreads) attn_bwd_dkdv_kernel(BwdArgs a) {
  constexpr int S = stride(D), NT = padded(D) / 8, BQ = kStreamRows<D>;
  DB_DYNAMIC_SMEM(bf16, smem);
  bf16* sk = smem;                                        // [kBr][S]
  bf16* sv = sk + kBr * S;                                // [kBr][S]
  bf16* sqd = sv + kBr * S;                               // [2 buffers][Q, dO][BQ][S]
  auto* sf = reinterpret_cast<float*>(sqd + 4 * BQ * S);  // [2 buffers][lse, Dr][BQ]
  auto sq = [&](int buf) { return sqd + (2 * buf) * BQ * S; };
  auto sdo = [&](int buf) { return sqd + (2 * buf + 1) * BQ * S; };
  auto slse = [&](int buf) { return sf + (2 * buf) * BQ; };
  auto sdr = [&](int buf) { return sf + (2 * buf + 1) * BQ; };

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, k0 = blockIdx.x * kBr, ld = a.H * D;
  const size_t qoff = size_t(b) * a.Tq * ld + h * D, koff = size_t(b) * a.Tk * ld + h * D;
  const float* lse = a.lse + (size_t(b) * a.H + h) * a.Tq;
  const float* dr = a.dr + (size_t(b) * a.H + h) * a.Tq;

  zero_pad<D, 2 * kBr + 4 * BQ>(smem);
  const int j0 = a.causal ? k0 / BQ : 0,
            tiles = (a.Tq + BQ - 1) / BQ;  // causal: queries < k0 see no key here
  load_tile<D, kBr>(sk, a.k + koff, ld, k0, a.Tk, a.vec);
  load_tile<D, kBr>(sv, a.v + koff, ld, k0, a.Tk, a.vec);
  auto load_q_tile = [&](int j, int buf) {
    load_tile<D, BQ>(sq(buf), a.q + qoff, ld, j * BQ, a.Tq, a.vec);
    load_tile<D, BQ>(sdo(buf), a.dout + qoff, ld, j * BQ, a.Tq, a.vec);
    load_row_slice<BQ>(slse(buf), lse, j * BQ, a.Tq);
    load_row_slice<BQ>(sdr(buf), dr, j * BQ, a.Tq);
  };
  if (j0 < tiles) load_q_tile(j0, 0);
  ptx::cp_async_commit_group();

  float dk[NT][4] = {}, dv[NT][4] = {};
  const int key0 = k0 + warp * 16 + g;  // this thread's accumulator rows: key0, key0 + 8
  for (int j = j0; j < tiles; ++j) {
    const int buf = (j - j0) % 2;
    if (j + 1 < tiles) {
      load_q_tile(j + 1, buf ^ 1);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();

    float p[BQ / 8][4], ds[BQ / 8][4];
    gemm_nt<D, BQ>(p, sk + warp * 16 * S, sq(buf), lane);  // S^T [16 keys, BQ queries]
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = 8 * n + 2 * t + (e & 1), qi = j * BQ + c, key = key0 + 8 * (e >> 1);
        const bool masked = qi >= a.Tq || (a.causal && key > qi);
        p[n][e] = masked ? 0.f : exp2f(p[n][e] * a.scale_log2 - slse(buf)[c] * kLog2e);
      }
    }
    gemm_pv<D, BQ>(dv, p, sdo(buf), lane);                   // dV += P^T dO
    gemm_nt<D, BQ>(ds, sv + warp * 16 * S, sdo(buf), lane);  // dP^T = V dO^T
#pragma unroll
    for (int n = 0; n < BQ / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - sdr(buf)[8 * n + 2 * t + (e & 1)]);
    }
    gemm_pv<D, BQ>(dk, ds, sq(buf), lane);  // dK += dS^T Q
    __syncthreads();                        // buffer `buf` is refilled by the next iteration's cp.async
  }
  ptx::cp_async_wait_group<0>();  // nothing may be in flight at exit (no query tile: causal, k0 >= Tq)
  store_rows<D, NT>(a.dk + koff, ld, dk, a.scale, key0, a.Tk, t);
  store_rows<D, NT>(a.dv + koff, ld, dv, 1.f, key0, a.Tk, t);
}

template <int D>
__global__ void __launch_bounds__(kThreads) attn_bwd_dq_kernel(BwdArgs a) {
  constexpr int S = stride(D), NT = padded(D) / 8, BK = kStreamRows<D>;
  DB_DYNAMIC_SMEM(bf16, smem);
  bf16* sq = smem;            // [kBr][S]
  bf16* sdo = sq + kBr * S;   // [kBr][S]
  bf16* skv = sdo + kBr * S;  // [2 buffers][K, V][BK][S]
  auto sk = [&](int buf) { return skv + (2 * buf) * BK * S; };
  auto sv = [&](int buf) { return skv + (2 * buf + 1) * BK * S; };

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kBr, ld = a.H * D;
  const size_t qoff = size_t(b) * a.Tq * ld + h * D, koff = size_t(b) * a.Tk * ld + h * D;
  const int row0 = q0 + warp * 16 + g;  // this thread's accumulator rows: row0, row0 + 8
  float lse2[2], dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    const size_t i = (size_t(b) * a.H + h) * a.Tq + row;
    lse2[r] = row < a.Tq ? a.lse[i] * kLog2e : 0.f;
    dr[r] = row < a.Tq ? a.dr[i] : 0.f;
  }

  zero_pad<D, 2 * kBr + 4 * BK>(smem);
  const int kv_end = a.causal ? min(a.Tk, min(q0 + kBr, a.Tq)) : a.Tk;
  const int tiles = (kv_end + BK - 1) / BK;
  load_tile<D, kBr>(sq, a.q + qoff, ld, q0, a.Tq, a.vec);
  load_tile<D, kBr>(sdo, a.dout + qoff, ld, q0, a.Tq, a.vec);
  load_tile<D, BK>(sk(0), a.k + koff, ld, 0, a.Tk, a.vec);
  load_tile<D, BK>(sv(0), a.v + koff, ld, 0, a.Tk, a.vec);
  ptx::cp_async_commit_group();

  float dq[NT][4] = {};
  for (int j = 0; j < tiles; ++j) {
    const int buf = j % 2;
    if (j + 1 < tiles) {
      load_tile<D, BK>(sk(buf ^ 1), a.k + koff, ld, (j + 1) * BK, a.Tk, a.vec);
      load_tile<D, BK>(sv(buf ^ 1), a.v + koff, ld, (j + 1) * BK, a.Tk, a.vec);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();

    float p[BK / 8][4], ds[BK / 8][4];
    gemm_nt<D, BK>(p, sq + warp * 16 * S, sk(buf), lane);  // S [16 queries, BK keys]
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j * BK + 8 * n + 2 * t + (e & 1), row = row0 + 8 * (e >> 1);
        const bool masked = key >= a.Tk || (a.causal && key > row);
        p[n][e] = masked ? 0.f : exp2f(p[n][e] * a.scale_log2 - lse2[e >> 1]);
      }
    }
    gemm_nt<D, BK>(ds, sdo + warp * 16 * S, sv(buf), lane);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[n][e] = p[n][e] * (ds[n][e] - dr[e >> 1]);
    }
    gemm_pv<D, BK>(dq, ds, sk(buf), lane);  // dQ += dS K
    __syncthreads();                        // buffer `buf` is refilled by the next iteration's cp.async
  }
  store_rows<D, NT>(a.dq + qoff, ld, dq, a.scale, row0, a.Tq, t);
}

template <int D>
cudaError_t launch_bwd(const BwdArgs& a, int B, float* dr, cudaStream_t stream) {
  constexpr int smem = bwd_smem_bytes<D>();
  if (smem > (48 << 10)) {
    cudaError_t err =
        cudaFuncSetAttribute(attn_bwd_dkdv_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err == cudaSuccess)
      err = cudaFuncSetAttribute(attn_bwd_dq_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  const int rows = B * a.H * a.Tq;
  cudaError_t err = DB_LAUNCH(attn_bwd_dot_kernel, dim3((rows + kThreads - 1) / kThreads), dim3(kThreads), 0,
                              stream, a.dout, a.out, dr, a.H, a.Tq, D, rows);
  if (err == cudaSuccess)
    err = DB_LAUNCH(attn_bwd_dkdv_kernel<D>, dim3((a.Tk + kBr - 1) / kBr, a.H, B), dim3(kThreads), smem,
                    stream, a);
  if (err == cudaSuccess)
    err = DB_LAUNCH(attn_bwd_dq_kernel<D>, dim3((a.Tq + kBr - 1) / kBr, a.H, B), dim3(kThreads), smem, stream,
                    a);
  return err;
}

}  // namespace
}  // namespace attn_mma
size_t attention_mma_backward_workspace(int B, int H, int Tq, int, int) {
  return (size_t(B) * H * Tq * sizeof(float) + 255) / 256 * 256;  // Dr [B, H, Tq]
}

// dout, q, out, dq [B, Tq, H*D]; k, v, dk, dv [B, Tk, H*D]; lse [B, H, Tq]; workspace: Dr [B, H, Tq].
cudaError_t attention_mma_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                                   const void* out, const float* lse, void* dq, void* dk, void* dv, int B,
                                   int H, int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                                   cudaStream_t stream) {
  using attn_mma::bf16;
  if (!attention_mma_supported(t, D, true) || B < 0 || H < 1 || Tq < 0 || Tk < 1 || !lse)
    return cudaErrorInvalidValue;
  for (const void* p : std::initializer_list<const void*>{dout, q, k, v, out, dq, dk, dv})
    if (!p || !attn_mma::aligned4(p)) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  if (Tq == 0) {  // no query: dK = dV = 0
    const size_t bytes = size_t(B) * Tk * H * D * sizeof(bf16);
    const cudaError_t err = cudaMemsetAsync(dk, 0, bytes, stream);
    return err == cudaSuccess ? cudaMemsetAsync(dv, 0, bytes, stream) : err;
  }
  if (!workspace) return cudaErrorInvalidValue;
  attn_mma::BwdArgs a{static_cast<const bf16*>(dout),
                      static_cast<const bf16*>(q),
                      static_cast<const bf16*>(k),
                      static_cast<const bf16*>(v),
                      static_cast<const bf16*>(out),
                      lse,
                      static_cast<float*>(workspace),
                      static_cast<bf16*>(dq),
                      static_cast<bf16*>(dk),
                      static_cast<bf16*>(dv),
                      H,
                      Tq,
                      Tk,
                      scale,
                      scale * attn_mma::kLog2e,
                      causal,
                      false};
  a.vec =
      attn_mma::aligned16(dout) && attn_mma::aligned16(q) && attn_mma::aligned16(k) && attn_mma::aligned16(v);
  float* dr = static_cast<float*>(workspace);
  switch (D) {
    case 40:
      return attn_mma::launch_bwd<40>(a, B, dr, stream);
    case 64:
      return attn_mma::launch_bwd<64>(a, B, dr, stream);
    case 80:
      return attn_mma::launch_bwd<80>(a, B, dr, stream);
    default:
      return attn_mma::launch_bwd<160>(a, B, dr, stream);
  }
}

}  // namespace db::kernels
