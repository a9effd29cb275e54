// Tensor-core flash attention, forward (issue 13): bf16 q, k, v, out; fp32 online softmax; lse f32.
// Backward: attention_mma_bwd.cu. Helpers and the shared-memory tile layout: attention_mma_common.cuh.
//
// Launch: grid (ceil(Tq / 64), H, B), 128 threads = 4 warps; each warp owns 16 query rows of the block's
// 64 and walks every key tile of 64 (causal: only tiles with a key <= the block's last query):
//   S = Q K^T (mma, fp32) -> scale, mask -> running max m, sum l -> O = O alpha + P V (P rounded to bf16).
// Q stays in shared memory (re-read by ldmatrix each tile rather than held in registers, which would cost
// DP/4 more registers per thread: 40 at D = 160). K and V tiles are double-buffered: tile j + 1 is in
// flight by cp.async while tile j is used. 64-row tiles: the largest that keeps D = 160's fp32 output
// accumulator (80 registers) plus the 64-key score tile (32) in registers without spills.
// Dynamic shared memory: Q + 2 x (K + V) = 5 x 64 x (DP + 8) x 2 bytes: 35 KiB (D 40), 45 KiB (64),
// 55 KiB (80), 105 KiB (160).
//
// ptxas -v, sm_90a (CUDA 13.0, -O3; no spills, also none for sm_80), and the resulting occupancy on an
// H100/H200 SM (64 K registers, 228 KiB shared memory), by registers and by shared memory:
//   D = 40:  126 registers, 35 KiB smem -> 4 blocks (16 warps) per SM
//   D = 64:  154 registers, 45 KiB      -> 3 blocks (12 warps)
//   D = 80:  168 registers, 55 KiB      -> 3 blocks (12 warps)
//   D = 160: 250 registers, 105 KiB     -> 2 blocks (8 warps)
// __launch_bounds__(128, kFwdMinBlocks): without a minimum ptxas capped D = 64 at 128 registers and
// spilled 4 bytes.
#include "attention_mma_common.cuh"
#include "dreambooth/kernels/attention_paths.h"

namespace db::kernels {
namespace attn_mma {
namespace {

constexpr int kBq = 64, kBk = 64;

// Blocks per SM the register allocation must allow (__launch_bounds__): ptxas's own choice spills at D = 64.
template <int D>
constexpr int kFwdMinBlocks = D == 40    ? 4
                              : D == 160 ? 2
                                         : 3;

template <int D>
constexpr int fwd_smem_bytes() {
  return (kBq + 4 * kBk) * stride(D) * int(sizeof(bf16));
}

// q [B, Tq, H*D], k, v [B, Tk, H*D], out [B, Tq, H*D]; lse [B, H, Tq] or null. scale_log2 = scale log2(e).
template <int D>
__global__ void __launch_bounds__(kThreads, kFwdMinBlocks<D>)
    attn_fwd_kernel(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int H, int Tq, int Tk,
                    float scale_log2, bool causal, bool vec) {
  constexpr int S = stride(D), NT = padded(D) / 8;
  DB_DYNAMIC_SMEM(bf16, smem);
  bf16* sq = smem;             // [kBq][S]
  bf16* skv = smem + kBq * S;  // [2 buffers][K, V][kBk][S]
  auto sk = [&](int buf) { return skv + (2 * buf) * kBk * S; };
  auto sv = [&](int buf) { return skv + (2 * buf + 1) * kBk * S; };

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
  const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * kBq, ld = H * D;
  const bf16* qg = q + size_t(b) * Tq * ld + h * D;
  const bf16* kg = k + size_t(b) * Tk * ld + h * D;
  const bf16* vg = v + size_t(b) * Tk * ld + h * D;

  zero_pad<D, kBq + 4 * kBk>(smem);
  const int kv_end = causal ? min(Tk, min(q0 + kBq, Tq)) : Tk;  // keys past kv_end are masked for all rows
  const int tiles = (kv_end + kBk - 1) / kBk;
  load_tile<D, kBq>(sq, qg, ld, q0, Tq, vec);
  load_tile<D, kBk>(sk(0), kg, ld, 0, Tk, vec);
  load_tile<D, kBk>(sv(0), vg, ld, 0, Tk, vec);
  ptx::cp_async_commit_group();

  float o[NT][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // rows g, g + 8 of this warp (log2 units)
  const int row0 = q0 + warp * 16 + g;
  for (int j = 0; j < tiles; ++j) {
    const int buf = j % 2;
    if (j + 1 < tiles) {
      load_tile<D, kBk>(sk(buf ^ 1), kg, ld, (j + 1) * kBk, Tk, vec);
      load_tile<D, kBk>(sv(buf ^ 1), vg, ld, (j + 1) * kBk, Tk, vec);
      ptx::cp_async_commit_group();
      ptx::cp_async_wait_group<1>();
    } else {
      ptx::cp_async_wait_group<0>();
    }
    __syncthreads();

    float s[kBk / 8][4];
    gemm_nt<D, kBk>(s, sq + warp * 16 * S, sk(buf), lane);
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kBk / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = j * kBk + 8 * n + 2 * t + (e & 1), row = row0 + 8 * (e >> 1);
        const bool masked = key >= Tk || (causal && key > row);
        s[n][e] = masked ? -INFINITY : s[n][e] * scale_log2;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(m[r], quad_max(mx[r]));
      base[r] = m_new == -INFINITY ? 0.f : m_new;  // a row masked so far: keep exp2 away from -inf - -inf
      alpha[r] = exp2f(m[r] - base[r]);
      m[r] = m_new;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < kBk / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - base[e >> 1]);
        l[e >> 1] += s[n][e];
      }
    }
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      o[n][0] *= alpha[0], o[n][1] *= alpha[0], o[n][2] *= alpha[1], o[n][3] *= alpha[1];
    }
    gemm_pv<D, kBk>(o, s, sv(buf), lane);
    __syncthreads();  // buffer `buf` is refilled by the next iteration's cp.async
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row0 + 8 * r;
    const float sum = quad_sum(l[r]);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    if (row >= Tq) continue;
    bf16* og = out + (size_t(b) * Tq + row) * ld + h * D;
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const int col = 8 * n + 2 * t;
      if (col < D)
        *reinterpret_cast<uint32_t*>(og + col) = pack_bf16(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
    }
    if (lse && t == 0) lse[(size_t(b) * H + h) * Tq + row] = (m[r] + log2f(sum)) * kLn2;
  }
}

template <int D>
cudaError_t launch_fwd(const bf16* q, const bf16* k, const bf16* v, bf16* out, float* lse, int B, int H,
                       int Tq, int Tk, float scale, bool causal, cudaStream_t stream) {
  constexpr int smem = fwd_smem_bytes<D>();
  if (smem > (48 << 10)) {
    const cudaError_t err =
        cudaFuncSetAttribute(attn_fwd_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
  }
  const bool vec = aligned16(q) && aligned16(k) && aligned16(v);
  return DB_LAUNCH(attn_fwd_kernel<D>, dim3((Tq + kBq - 1) / kBq, H, B), dim3(kThreads), smem, stream, q, k,
                   v, out, lse, H, Tq, Tk, scale * kLog2e, causal, vec);
}

}  // namespace
}  // namespace attn_mma

bool attention_mma_supported(DType t, int D, bool backward) {
  (void)backward;
  return t == DType::BF16 && (D == 40 || D == 64 || D == 80 || D == 160);
}

size_t attention_mma_forward_workspace(int, int, int, int, int) {
  return 0;
}

cudaError_t attention_mma_forward(DType t, const void* q, const void* k, const void* v, void* out, float* lse,
                                  int B, int H, int Tq, int Tk, int D, float scale, bool causal, void*,
                                  cudaStream_t stream) {
  using attn_mma::bf16;
  if (!attention_mma_supported(t, D, false) || B < 0 || H < 1 || Tq < 0 || Tk < 1)
    return cudaErrorInvalidValue;
  if (!attn_mma::aligned4(q) || !attn_mma::aligned4(k) || !attn_mma::aligned4(v) || !attn_mma::aligned4(out))
    return cudaErrorInvalidValue;
  if (B == 0 || Tq == 0) return cudaSuccess;
  const auto* qb = static_cast<const bf16*>(q);
  const auto* kb = static_cast<const bf16*>(k);
  const auto* vb = static_cast<const bf16*>(v);
  auto* ob = static_cast<bf16*>(out);
  switch (D) {
    case 40:
      return attn_mma::launch_fwd<40>(qb, kb, vb, ob, lse, B, H, Tq, Tk, scale, causal, stream);
    case 64:
      return attn_mma::launch_fwd<64>(qb, kb, vb, ob, lse, B, H, Tq, Tk, scale, causal, stream);
    case 80:
      return attn_mma::launch_fwd<80>(qb, kb, vb, ob, lse, B, H, Tq, Tk, scale, causal, stream);
    default:
      return attn_mma::launch_fwd<160>(qb, kb, vb, ob, lse, B, H, Tq, Tk, scale, causal, stream);
  }
}

}  // namespace db::kernels
