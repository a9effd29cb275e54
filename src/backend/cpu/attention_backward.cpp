// CPU multi-head attention backward. Per (batch, head, chunk of queries), P is recomputed from the
// scores and the saved row log-sum-exp (P = exp(scale · q k^T - lse), 0 where causally masked):
//   dV += P^T dO,  dP = dO V^T,  dS = P ∘ (dP - D) with D_i = dO_i · O_i,
//   dQ = scale · dS K,  dK += scale · dS^T Q.
// dK and dV sum over query chunks in chunk order; heads are strided views into [B, T, H*D].
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
constexpr int64_t kScoreFloats = int64_t(16) << 20;  // 64 MiB per score buffer (P and dP)
}

// dout, q, out, dq [B, Tq, H*D]; k, v, dk, dv [B, Tk, H*D]; lse [B, H, Tq]
void CpuOps::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                                Tensor& dk, Tensor& dv) {
  DB_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.shape() == k.shape(), "attention_backward: q ", q.desc(),
           " k ", k.desc(), " v ", v.desc());
  const int64_t B = q.dim(0), Tq = q.dim(1), HD = q.dim(2), Tk = k.dim(1), H = p.heads;
  DB_CHECK(k.dim(0) == B && k.dim(2) == HD && H > 0 && HD % H == 0, "attention_backward: q ", q.desc(), " k ",
           k.desc(), " with ", H, " heads");
  DB_CHECK(dout.shape() == q.shape() && out.shape() == q.shape() && dq.shape() == q.shape(),
           "attention_backward: dout ", dout.desc(), " out ", out.desc(), " dq ", dq.desc(), " for q ",
           q.desc());
  DB_CHECK(dk.shape() == k.shape() && dv.shape() == k.shape(), "attention_backward: dk ", dk.desc(), " dv ",
           dv.desc(), " for k ", k.desc());
  DB_CHECK(lse.numel() == B * H * Tq, "attention_backward: lse ", lse.desc(), " expected [", B, ", ", H, ", ",
           Tq, "]");
  const int64_t D = HD / H;
  const float scale = p.scale != 0.f ? p.scale : 1.f / std::sqrt(float(D));
  const int64_t qc = std::max<int64_t>(1, std::min<int64_t>(Tq, kScoreFloats / Tk));
  std::vector<float> P(size_t(qc * Tk)), dP(size_t(qc * Tk)), Di(static_cast<size_t>(qc));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t qoff = b * Tq * HD + h * D, koff = b * Tk * HD + h * D;
      const float* qb = q.f32() + qoff;
      const float* kb = k.f32() + koff;
      const float* vb = v.f32() + koff;
      const float* ob = out.f32() + qoff;
      const float* dob = dout.f32() + qoff;
      const float* lb = lse.f32() + (b * H + h) * Tq;
      float* dqb = dq.f32() + qoff;
      float* dkb = dk.f32() + koff;
      float* dvb = dv.f32() + koff;
      for (int64_t i0 = 0; i0 < Tq; i0 += qc) {
        const int64_t n = std::min(qc, Tq - i0);
        const float acc = i0 == 0 ? 0.f : 1.f;  // first chunk overwrites dK, dV
        // P [n, Tk] = exp(scale · Q K^T - lse)
        cpu_gemm_nt(int(n), int(Tk), int(D), scale, qb + i0 * HD, int(HD), kb, int(HD), 0.f, P.data(),
                    int(Tk));
#pragma omp parallel for schedule(static) if (n * Tk >= kCpuParallelMinWork)
        for (int64_t r = 0; r < n; ++r) {
          const int64_t i = i0 + r;
          const int64_t valid = p.causal ? std::min(Tk, i + 1) : Tk;
          float* pr = P.data() + r * Tk;
          for (int64_t j = 0; j < valid; ++j) pr[j] = std::exp(pr[j] - lb[i]);
          for (int64_t j = valid; j < Tk; ++j) pr[j] = 0.f;
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += double(dob[i * HD + d]) * ob[i * HD + d];
          Di[r] = float(s);
        }
        // dV [Tk, D] (+)= P^T [Tk, n] · dO [n, D]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Tk), int(D), int(n), 1.f, P.data(), int(Tk),
                    dob + i0 * HD, int(HD), acc, dvb, int(HD));
        // dP [n, Tk] = dO [n, D] · V^T
        cpu_gemm_nt(int(n), int(Tk), int(D), 1.f, dob + i0 * HD, int(HD), vb, int(HD), 0.f, dP.data(),
                    int(Tk));
        // dS = P ∘ (dP - D_i), stored in dP (masked entries have P = 0)
#pragma omp parallel for schedule(static) if (n * Tk >= kCpuParallelMinWork)
        for (int64_t r = 0; r < n; ++r) {
          const float* pr = P.data() + r * Tk;
          float* dsr = dP.data() + r * Tk;
          for (int64_t j = 0; j < Tk; ++j) dsr[j] = pr[j] * (dsr[j] - Di[r]);
        }
        // dQ [n, D] = scale · dS [n, Tk] · K [Tk, D]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(D), int(Tk), scale, dP.data(),
                    int(Tk), kb, int(HD), 0.f, dqb + i0 * HD, int(HD));
        // dK [Tk, D] (+)= scale · dS^T [Tk, n] · Q [n, D]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(Tk), int(D), int(n), scale, dP.data(),
                    int(Tk), qb + i0 * HD, int(HD), acc, dkb, int(HD));
      }
    }
  }
}

}  // namespace db
