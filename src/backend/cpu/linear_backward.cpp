// CPU linear backward: two GEMMs (cblas_sgemm) and a column sum for the bias.
#include <cblas.h>

#include <algorithm>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

void cpu_column_sum_add(const float* a, int64_t M, int64_t N, int64_t lda, float* out) {
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (M * N >= kCpuParallelMinWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t n0 = blk * kBlock, nb = std::min(kBlock, N - n0);
    double acc[kBlock] = {};
    for (int64_t m = 0; m < M; ++m) {
      const float* row = a + m * lda + n0;
      for (int64_t n = 0; n < nb; ++n) acc[n] += row[n];
    }
    for (int64_t n = 0; n < nb; ++n) out[n0 + n] += float(acc[n]);
  }
}

// dy [M, N], x [M, K], w [N, K] (or [N, 1, 1, K]) -> dx [M, K]; dw [N, K] +=; db [N] +=
void CpuOps::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                             Tensor* db) {
  const int64_t N = w.dim(0), K = w.numel() / N;
  DB_CHECK(x.dim(-1) == K, "linear_backward: input ", x.desc(), " does not match weight ", w.desc());
  const int64_t M = x.numel() / K;
  DB_CHECK(dy.numel() == M * N && dy.dim(-1) == N, "linear_backward: dy ", dy.desc(), " expected [", M, ", ",
           N, "]");
  DB_CHECK(!dx || dx->numel() == M * K, "linear_backward: dx ", dx->desc(), " for input ", x.desc());
  DB_CHECK(!dw || dw->numel() == N * K, "linear_backward: dw ", dw->desc(), " for weight ", w.desc());
  DB_CHECK(!db || db->numel() == N, "linear_backward: db ", db->desc(), " expected [", N, "]");
  // dx [M, K] = dy [M, N] · w [N, K]
  if (dx)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(K), int(N), 1.f, dy.f32(), int(N),
                w.f32(), int(K), 0.f, dx->f32(), int(K));
  // dw [N, K] += dy^T [N, M] · x [M, K]
  if (dw)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(N), int(K), int(M), 1.f, dy.f32(), int(N),
                x.f32(), int(K), 1.f, dw->f32(), int(K));
  if (db) cpu_column_sum_add(dy.f32(), M, N, N, db->f32());
}

}  // namespace db
