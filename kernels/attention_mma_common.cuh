#pragma once
// Device helpers shared by the tensor-core attention kernels (attention_mma.cu forward,
// attention_mma_bwd.cu backward): tile loads by cp.async, and the two warp-level GEMM shapes of
// FlashAttention on mma.m16n8k16 (fragment layouts: dreambooth/cuda/ptx.cuh).
//
// Shared-memory tiles are [rows][stride(D)] bf16: the head dim is padded to the mma k-step of 16 (DP,
// columns D..DP-1 zeroed once per block, never read from or written to global memory) plus 8 elements
// of skew, so the 8 row addresses of one ldmatrix matrix fall in 8 distinct 4-bank groups (stride in
// 32-bit words mod 32 is 28, 4, 12, 20 for D = 40, 64, 80, 160).
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/cuda/ptx.cuh"

namespace db::kernels::attn_mma {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__host__ __device__ constexpr int padded(int D) {
  return (D + 15) / 16 * 16;
}
__host__ __device__ constexpr int stride(int D) {
  return padded(D) + 8;
}

// Rows [r0, r0 + R) of one head of a [T, ld] bf16 matrix (g points at row 0, column 0 of the head) into
// s [R][stride(D)], columns 0..D-1; rows >= T are zero-filled (their source clamped to row 0, which
// exists since T >= 1). 16-byte copies when every row start is 16-byte aligned (vec), else 4-byte.
template <int D, int R>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int ld, int r0, int T, bool vec) {
  static_assert(D % 8 == 0, "head dim must be a multiple of 8");
  constexpr int S = stride(D);
  if (vec) {
    constexpr int C = D / 8;
    for (int i = threadIdx.x; i < R * C; i += kThreads) {
      const int r = i / C, c = i % C;
      const bool in = r0 + r < T;
      ptx::cp_async_cg_zfill(s + r * S + c * 8, g + size_t(in ? r0 + r : 0) * ld + c * 8, in ? 16 : 0);
    }
  } else {
    constexpr int C = D / 2;
    for (int i = threadIdx.x; i < R * C; i += kThreads) {
      const int r = i / C, c = i % C;
      const bool in = r0 + r < T;
      ptx::cp_async_ca_zfill<4>(s + r * S + c * 2, g + size_t(in ? r0 + r : 0) * ld + c * 2, in ? 4 : 0);
    }
  }
}

// Zero the padding columns D..DP-1 of a [R][stride(D)] tile (a multiple of 8 columns: 16-byte stores).
template <int D, int R>
__device__ __forceinline__ void zero_pad(bf16* s) {
  constexpr int S = stride(D), P = padded(D) - D;
  if constexpr (P > 0) {
    for (int i = threadIdx.x; i < R * (P / 8); i += kThreads)
      *reinterpret_cast<uint4*>(s + (i / (P / 8)) * S + D + (i % (P / 8)) * 8) = make_uint4(0, 0, 0, 0);
  }
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16;
}

// c += a b (one m16n8k16 step).
__device__ __forceinline__ void mma(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  float d[4];
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  c[0] = d[0], c[1] = d[1], c[2] = d[2], c[3] = d[3];
}

// acc [16, N] = A B^T over the padded head dim: A = sa [16 rows][stride(D)] (this warp's rows), B = sb
// [N rows][stride(D)]. acc[n] is the accumulator fragment of columns 8n..8n+7.
template <int D, int N>
__device__ __forceinline__ void gemm_nt(float (&acc)[N / 8][4], const bf16* sa, const bf16* sb, int lane) {
  constexpr int S = stride(D);
#pragma unroll
  for (int n = 0; n < N / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < padded(D); kk += 16) {
    uint32_t a[4];
    ptx::ldmatrix_x4(a, sa + (lane % 16) * S + kk + (lane / 16) * 8);
#pragma unroll
    for (int n2 = 0; n2 < N / 16; ++n2) {
      // matrices: B[n0:n0+8, kk:kk+8], B[n0:n0+8, kk+8:], B[n0+8:, kk:kk+8], B[n0+8:, kk+8:]
      uint32_t b[4];
      ptx::ldmatrix_x4(b, sb + (n2 * 16 + lane % 8 + (lane / 16) * 8) * S + kk + (lane / 8 % 2) * 8);
      mma(acc[2 * n2], a, b);
      mma(acc[2 * n2 + 1], a, b + 2);
    }
  }
}

// acc [16, DP] += P B: P [16, N] held as gemm_nt's accumulator fragments (rounded to bf16 here), B = sb
// [N rows][stride(D)] row-major, read transposed by ldmatrix.trans.
template <int D, int N>
__device__ __forceinline__ void gemm_pv(float (&acc)[padded(D) / 8][4], const float (&p)[N / 8][4],
                                        const bf16* sb, int lane) {
  constexpr int S = stride(D);
#pragma unroll
  for (int k2 = 0; k2 < N / 16; ++k2) {
    const uint32_t a[4] = {pack_bf16(p[2 * k2][0], p[2 * k2][1]), pack_bf16(p[2 * k2][2], p[2 * k2][3]),
                           pack_bf16(p[2 * k2 + 1][0], p[2 * k2 + 1][1]),
                           pack_bf16(p[2 * k2 + 1][2], p[2 * k2 + 1][3])};
#pragma unroll
    for (int n2 = 0; n2 < padded(D) / 16; ++n2) {
      // matrices: B[k0:k0+8, n0:n0+8], B[k0+8:, n0:n0+8], B[k0:k0+8, n0+8:], B[k0+8:, n0+8:] (transposed)
      uint32_t b[4];
      ptx::ldmatrix_x4_trans(b, sb + (k2 * 16 + lane % 16) * S + n2 * 16 + (lane / 16) * 8);
      mma(acc[2 * n2], a, b);
      mma(acc[2 * n2 + 1], a, b + 2);
    }
  }
}

// Sum over the 4 lanes of a quad (the lanes holding one accumulator row), in a fixed order.
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// 16-byte cp.async needs every row start 16-byte aligned: base pointers (row stride H*D and head offset
// h*D are multiples of 8 elements for every supported D).
inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}
inline bool aligned4(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 3) == 0;
}

}  // namespace db::kernels::attn_mma
