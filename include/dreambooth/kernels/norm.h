#pragma once
// Group norm and layer norm (kernels/group_norm.cu, kernels/layer_norm.cu). Semantics are CpuOps'
// (backend/ops.h): statistics and accumulation in f32, the biased variance, eps inside the sqrt.
#include "dreambooth/kernels/common.h"

namespace db::kernels {

// x, y [B, N, C] (t); gamma, beta [C] (t); G groups of C/G consecutive channels; statistics over (N, C/G).
// y = (x - mean) * rstd * gamma[c] + beta[c], then SiLU when `silu`. mean, rstd f32 [B, G] written when
// non-null. Every channels-per-group of SD 1.x/2.x UNets and VAEs (C/G = 4 .. 80).
cudaError_t group_norm_forward(DType t, const void* x, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int B, int N, int C, int G, float eps, bool silu,
                               cudaStream_t stream);
// From x and the saved mean/rstd (with `silu` the pre-activation is recomputed): dx [B, N, C] (t,
// overwritten); dgamma, dbeta f32 [C] += (either may be null).
size_t group_norm_backward_workspace(int B, int N, int C, int G);
cudaError_t group_norm_backward(DType t, const void* dy, const void* x, const void* gamma, const void* beta,
                                const float* mean, const float* rstd, void* dx, float* dgamma, float* dbeta,
                                int B, int N, int C, int G, bool silu, void* workspace, cudaStream_t stream);

// Layer norm over the last dim of x [M, C] (t); gamma, beta [C] (t); mean, rstd f32 [M] when non-null.
cudaError_t layer_norm_forward(DType t, const void* x, const void* gamma, const void* beta, void* y,
                               float* mean, float* rstd, int64_t M, int C, float eps, cudaStream_t stream);
// dx [M, C] (t, overwritten); dgamma, dbeta f32 [C] += (either may be null).
size_t layer_norm_backward_workspace(int64_t M, int C);
cudaError_t layer_norm_backward(DType t, const void* dy, const void* x, const void* gamma, const float* mean,
                                const float* rstd, void* dx, float* dgamma, float* dbeta, int64_t M, int C,
                                void* workspace, cudaStream_t stream);

}  // namespace db::kernels
