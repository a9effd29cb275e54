#pragma once
// The tensor-core layout kernel (tests/emu/mma_layout.cu): D = A * B + C for one 16x16x8 tile,
// with the fragments loaded by ldmatrix in one of three ways (all must give the same D).
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

namespace db::test_kernels {

// A: [16][16] row-major, B: [16][8] row-major (k x n), C, D: [16][8] row-major f32; one warp.
// variant 0: A by ldmatrix_x4 from A, B by ldmatrix_x2 from B^T;
// variant 1: A by ldmatrix_x4_trans from A^T, B by ldmatrix_x2_trans from B;
// variant 2: A by ldmatrix_x2 (A) + ldmatrix_x2_trans (A^T), B by ldmatrix_x1 (B^T) + ldmatrix_x1_trans (B);
// variant 3: no ldmatrix, the fragments read from global memory as the PTX ISA's tables place them
// (pins the mma layout on its own, so ldmatrix and mma errors cannot cancel out).
cudaError_t mma_tile(const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c, float* d, int variant);

}  // namespace db::test_kernels
