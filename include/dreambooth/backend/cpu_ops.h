#pragma once
// CpuOps: the fp32 reference backend. Plain loops parallelised with OpenMP over outer dimensions,
// GEMMs through OpenBLAS (cblas_sgemm), convolution as im2col + GEMM (a 1x1 stride-1 conv in NHWC
// is a plain GEMM). One source file per op family under src/backend/cpu/.
#include "dreambooth/backend/ops.h"

namespace db {

class CpuOps final : public Ops {
 public:
  Device device() const override { return Device::CPU; }
  const char* name() const override { return "cpu"; }
  Tensor empty(const Shape& shape) override { return Tensor::empty(shape); }
  void upload(const float* host, Tensor& dst) override;
  void download(const Tensor& src, float* host) override;

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
};

// y[M, N] = alpha * a[M, K] · b^T (b [N, K]) + beta * y, row-major, with leading dimensions; the
// one GEMM entry point of the CPU backend (OpenBLAS; call outside OpenMP parallel regions).
void cpu_gemm_nt(int M, int N, int K, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* y, int ldy);

}  // namespace db
