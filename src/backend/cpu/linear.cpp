// CPU linear: y = x · w^T + b through cblas_sgemm.
#include <cblas.h>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

void cpu_gemm_nt(int M, int N, int K, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* y, int ldy) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, alpha, a, lda, b, ldb, beta, y, ldy);
}

// x [M, K], w [N, K] (or [N, 1, 1, K]), b [N] -> y [M, N]
void CpuOps::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  const int64_t N = w.dim(0), K = w.numel() / N;
  DB_CHECK(x.dim(-1) == K, "linear: input ", x.desc(), " does not match weight ", w.desc());
  const int64_t M = x.numel() / K;
  DB_CHECK(y.numel() == M * N && y.dim(-1) == N, "linear: output ", y.desc(), " expected [", M, ", ", N, "]");
  DB_CHECK(!b.defined() || b.numel() == N, "linear: bias ", b.desc(), " expected [", N, "]");
  float* yp = y.f32();
  const float* bp = b.defined() ? b.f32() : nullptr;
  if (bp) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) std::copy(bp, bp + N, yp + m * N);
  }
  cpu_gemm_nt(int(M), int(N), int(K), 1.f, x.f32(), int(K), w.f32(), int(K), bp ? 1.f : 0.f, yp, int(N));
}

}  // namespace db
