// One mma.m16n8k16 tile with ldmatrix-loaded fragments (declared in mma_layout_kernels.h). Compiled by
// nvcc as well: the same test proves the fragment mapping on a GPU.
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/cuda/ptx.cuh"
#include "mma_layout_kernels.h"

namespace db::test_kernels {
namespace {

// Every row 16-byte aligned, as ldmatrix requires: a/at rows are 32 bytes, b rows 16, bt rows 32.
struct alignas(16) Tiles {
  __nv_bfloat16 a[16][16];   // A[m][k]
  __nv_bfloat16 at[16][16];  // A^T[k][m]
  __nv_bfloat16 b[16][8];    // B[k][n]
  __nv_bfloat16 bt[8][16];   // B^T[n][k]
};

__global__ void mma_tile_kernel(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* C, float* D,
                                int variant) {
  DB_SHARED(Tiles, s);
  const unsigned lane = threadIdx.x;
  for (unsigned i = lane; i < 256; i += 32) {
    s.a[i / 16][i % 16] = A[i];
    s.at[i % 16][i / 16] = A[i];
  }
  for (unsigned i = lane; i < 128; i += 32) {
    s.b[i / 8][i % 8] = B[i];
    s.bt[i % 8][i / 8] = B[i];
  }
  __syncwarp();

  // Lane L gives the row address of row L % 8 of matrix L / 8 (lanes past 8 * matrices are ignored).
  const unsigned m = lane / 8, r = lane % 8;
  uint32_t a[4], b[2];
  if (variant == 0) {
    ptx::ldmatrix_x4(
        a, &s.a[lane % 16][lane / 16 * 8]);    // matrices: A[0:8,0:8] A[8:16,0:8] A[0:8,8:16] A[8:16,8:16]
    ptx::ldmatrix_x2(b, &s.bt[r][m % 2 * 8]);  // B^T[0:8, 0:8], B^T[0:8, 8:16]
  } else if (variant == 1) {
    ptx::ldmatrix_x4_trans(a,
                           &s.at[m / 2 * 8 + r][m % 2 * 8]);  // A^T[0:8,0:8] A^T[0:8,8:16] A^T[8:16,0:8] ...
    ptx::ldmatrix_x2_trans(b, &s.b[lane % 16][0]);            // B[0:8, :], B[8:16, :]
  } else if (variant == 3) {
    // No ldmatrix: the fragments exactly as the PTX ISA tabulates them, read from global memory.
    const unsigned g = lane / 4, t = lane % 4;
    auto pack = [](__nv_bfloat16 lo, __nv_bfloat16 hi) {
      return uint32_t(__bfloat16_as_ushort(lo)) | uint32_t(__bfloat16_as_ushort(hi)) << 16;
    };
    a[0] = pack(A[g * 16 + 2 * t], A[g * 16 + 2 * t + 1]);
    a[1] = pack(A[(g + 8) * 16 + 2 * t], A[(g + 8) * 16 + 2 * t + 1]);
    a[2] = pack(A[g * 16 + 2 * t + 8], A[g * 16 + 2 * t + 9]);
    a[3] = pack(A[(g + 8) * 16 + 2 * t + 8], A[(g + 8) * 16 + 2 * t + 9]);
    b[0] = pack(B[(2 * t) * 8 + g], B[(2 * t + 1) * 8 + g]);
    b[1] = pack(B[(2 * t + 8) * 8 + g], B[(2 * t + 9) * 8 + g]);
  } else {
    ptx::ldmatrix_x2(a, &s.a[lane % 16][0]);                 // a[0], a[1]: A[0:16, 0:8]
    ptx::ldmatrix_x2_trans(a + 2, &s.at[8 + r][m % 2 * 8]);  // a[2], a[3]: A^T[8:16, 0:16]
    ptx::ldmatrix_x1(b, &s.bt[r][0]);                        // b[0]: B^T[0:8, 0:8]
    ptx::ldmatrix_x1_trans(b + 1, &s.b[8 + r][0]);           // b[1]: B[8:16, :]
  }
  const unsigned g = lane / 4, t = lane % 4;
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t],
                      C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  ptx::mma_m16n8k16_bf16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}

}  // namespace

cudaError_t mma_tile(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c, float* d, int variant) {
  return DB_LAUNCH(mma_tile_kernel, dim3(1), dim3(32), 0, nullptr, a, b, c, d, variant);
}

}  // namespace db::test_kernels
