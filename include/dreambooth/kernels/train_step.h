#pragma once
// The training step's kernels (kernels/train_step.cu) and the device Philox stream (kernels/philox.cu).
// Semantics are CpuOps' (backend/ops.h; src/backend/cpu/train_step_ops.cpp).
#include "dreambooth/kernels/common.h"

namespace db {
struct AdamWStep;  // backend/ops.h
}  // namespace db

namespace db::kernels {

// pred [S, n] (t), target [S, n] f32, k [S] f32 (the host's float(2 grad_weight[s] / n)):
// dpred (t, overwritten) = k[s] * (pred - target); sample_mse [S] f32 = mean (pred - target)^2,
// accumulated in f32 or wider in a fixed order.
size_t mse_loss_workspace(int S, int64_t n);
cudaError_t mse_loss_forward_backward(DType t, const void* pred, const float* target, const float* k,
                                      void* dpred, float* sample_mse, int S, int64_t n, void* workspace,
                                      cudaStream_t stream);
// *out (f64) = sum of x^2 over n f32 elements, f64 partial sums in a fixed order (any launch shape
// gives the same bits).
size_t sum_of_squares_workspace(int64_t n);
cudaError_t sum_of_squares(const float* x, int64_t n, double* out, void* workspace, cudaStream_t stream);
namespace detail {
// For tests: sum_of_squares under an explicit launch shape (1 <= threads <= 128, any blocks >= 1); the
// chunking is fixed, so every shape gives sum_of_squares' bits.
cudaError_t sum_of_squares_shaped(const float* x, int64_t n, double* out, void* workspace, unsigned blocks,
                                  unsigned threads, cudaStream_t stream);
}  // namespace detail
// coef [2] f32: coef[0] = clip coefficient min(1, max_norm / (sqrt(sum sumsq[0, n_sumsq)) + 1e-6)) (1 when
// max_norm <= 0), coef[1] = 1 when that norm and check[0, n_check) are finite, else 0 (ops.h
// clip_and_check, identical to backend/ops.h clip_coefficient).
cudaError_t clip_and_check(const double* sumsq, int n_sumsq, const float* check, int64_t n_check,
                           float max_norm, float* coef, cudaStream_t stream);

// The AdamW update's scalars, formed on the host exactly as the CPU backend forms them (double, then
// rounded once to float).
struct AdamWScalars {
  float decay;      // float(1 - lr * weight_decay)
  float w1, w2;     // float(1 - beta1), float(1 - beta2)
  float beta2;      // float(beta2)
  float eps;        // float(eps)
  float step_size;  // float(lr / (1 - beta1^step))
  float bc2_sqrt;   // float(sqrt(1 - beta2^step))
};
// Those scalars for one step (host code; CudaOps and the kernel tests share it).
AdamWScalars adamw_scalars(const AdamWStep& c);
// AdamW over n f32 elements with g = grad * coef[0], in the CPU backend's operation order with no
// contraction into fused multiply-adds, so the result is bit-identical to CpuOps::adamw_step; nothing
// changes when coef[1] == 0. working (working_t, may be null) receives the new master rounded to its dtype.
cudaError_t adamw_step(float* master, const float* grad, float* m, float* v, DType working_t, void* working,
                       int64_t n, const AdamWScalars& s, const float* coef, cudaStream_t stream);

// Standard normals of the Philox stream (seed, purpose, step, sample) (core/philox.h PhiloxStream::normals):
// the same Box-Muller in double, rounded once to float, so the device draws the CPU's values.
cudaError_t philox_normals(uint64_t seed, uint32_t purpose, uint32_t step, uint32_t sample, float* out,
                           uint64_t n, cudaStream_t stream);

}  // namespace db::kernels
