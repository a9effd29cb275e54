#pragma once
// CpuOps: the fp32 reference backend. Plain loops parallelised with OpenMP over outer dimensions,
// GEMMs through OpenBLAS (cblas_sgemm), convolution as im2col + GEMM (a 1x1 stride-1 conv in NHWC
// is a plain GEMM). One source file per op family under src/backend/cpu/.
#include "dreambooth/backend/host_pool.h"
#include "dreambooth/backend/ops.h"

namespace db {

class CpuOps final : public Ops {
 public:
  Device device() const override { return Device::CPU; }
  const char* name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::F32; }

  // ---- memory (src/backend/cpu/memory.cpp): pooled host memory; copies are synchronous ----
  Tensor empty(const Shape& shape, DType dtype = DType::F32) override { return pool_.empty(shape, dtype); }
  void fill(Tensor& t, float value) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void cast(const Tensor& src, Tensor& dst) override;
  void upload(const void* host, Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  void synchronize() override {}
  MemoryStats memory_stats() const override { return pool_.stats(); }
  void reset_peak_memory() override { pool_.reset_peak(); }

  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                      const Conv2dGeometry& g) override;
  void group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y, int groups,
                          float eps, Activation act, Tensor* mean, Tensor* rstd) override;
  void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y, float eps,
                          Tensor* mean, Tensor* rstd) override;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                         const AttentionParams& p, Tensor* lse) override;
  void activation_forward(const Tensor& x, Tensor& y, Activation act) override;
  void geglu_forward(const Tensor& x, Tensor& y) override;
  void add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha, float beta) override;
  void add_broadcast_forward(Tensor& x, const Tensor& v) override;
  void scale_forward(const Tensor& x, Tensor& y, float s) override;
  void concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) override;
  void upsample_nearest2x_forward(const Tensor& x, Tensor& y) override;
  void timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) override;
  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) override;

  // ---- backward (src/backend/cpu/*_backward.cpp) ----
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                       Tensor* db) override;
  void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw, Tensor* db,
                       const Conv2dGeometry& g) override;
  void group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& mean, const Tensor& rstd, int groups, Activation act, Tensor* dx,
                           Tensor* dgamma, Tensor* dbeta) override;
  void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                           const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                          Tensor& dk, Tensor& dv) override;
  void activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation act) override;
  void geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) override;
  void add_broadcast_backward(const Tensor& dy, Tensor& dv) override;
  void concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) override;
  void upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) override;
  void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) override;

  // ---- the training step (src/backend/cpu/train_step_ops.cpp) ----
  void mse_loss_forward_backward(const Tensor& pred, const Tensor& target,
                                 const std::vector<double>& grad_weight, Tensor& dpred,
                                 Tensor& sample_mse) override;
  void sum_of_squares(const Tensor& x, Tensor& out) override;
  void clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) override;
  void adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                  const AdamWStep& p, const Tensor& coef) override;

 private:
  HostPool pool_;
};

// y[M, N] = alpha * a[M, K] · b^T (b [N, K]) + beta * y, row-major, with leading dimensions; the
// one GEMM entry point of the CPU backend (OpenBLAS; call outside OpenMP parallel regions).
void cpu_gemm_nt(int M, int N, int K, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* y, int ldy);

// Backward loops run serially below this many elements of work: forking threads for a few thousand
// floats costs more than it saves, and on a loaded machine spinning OpenMP threads multiply it.
constexpr int64_t kCpuParallelMinWork = int64_t(1) << 15;

// out[n] += sum_m a[m * lda + n] for n < N (column sums of a row-major [M, N] block), accumulated in
// double; parallel over column blocks, so the summation order does not depend on the thread count.
void cpu_column_sum_add(const float* a, int64_t M, int64_t N, int64_t lda, float* out);

}  // namespace db
