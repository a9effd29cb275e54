// CPU multi-head attention: per (batch, head, chunk of queries) S = scale · Q K^T (GEMM), a stable
// row softmax (row max subtracted), O = P V (GEMM). Heads are strided views into [B, T, H*D].
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
constexpr int64_t kScoreFloats = int64_t(16) << 20;  // 64 MiB of scores per query chunk

// exp(x) for the softmax's x <= 0 (row max subtracted), vectorisable (std::exp is not at -O2):
// x = n ln2 + r, |r| <= ln2/2, exp(r) by the Cephes expf polynomial, 2^n through the exponent bits.
// Relative error < 2e-7 (about 1 ulp), the same as libm's expf for this range.
inline float exp_nonpositive(float x) {
  x = x < -87.f ? -87.f : x;
  const int n = int(x * 1.44269504088896341f - 0.5f);  // truncation toward zero: ceil(t - 0.5) for t <= 0
  const float fn = float(n);
  const float r = (x - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.f;
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return er * scale;
}
}  // namespace

// q [B, Tq, H*D], k/v [B, Tk, H*D] -> out [B, Tq, H*D]; lse [B, H, Tq]
void CpuOps::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                               const AttentionParams& p, Tensor* lse) {
  DB_CHECK(q.ndim() == 3 && k.ndim() == 3 && v.shape() == k.shape(), "attention: q ", q.desc(), " k ",
           k.desc(), " v ", v.desc());
  const int64_t B = q.dim(0), Tq = q.dim(1), HD = q.dim(2), Tk = k.dim(1), H = p.heads;
  DB_CHECK(k.dim(0) == B && k.dim(2) == HD && H > 0 && HD % H == 0, "attention: q ", q.desc(), " k ",
           k.desc(), " with ", H, " heads");
  DB_CHECK(out.shape() == q.shape(), "attention: output ", out.desc(), " expected ", q.desc());
  const int64_t D = HD / H;
  const float scale = p.scale != 0.f ? p.scale : 1.f / std::sqrt(float(D));
  const int64_t qc = std::max<int64_t>(1, std::min<int64_t>(Tq, kScoreFloats / Tk));
  std::vector<float> S(size_t(qc * Tk));
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* qb = q.f32() + b * Tq * HD + h * D;
      const float* kb = k.f32() + b * Tk * HD + h * D;
      const float* vb = v.f32() + b * Tk * HD + h * D;
      float* ob = out.f32() + b * Tq * HD + h * D;
      for (int64_t i0 = 0; i0 < Tq; i0 += qc) {
        const int64_t n = std::min(qc, Tq - i0);
        // S [n, Tk] = scale · Q[i0:i0+n] K^T
        cpu_gemm_nt(int(n), int(Tk), int(D), scale, qb + i0 * HD, int(HD), kb, int(HD), 0.f, S.data(),
                    int(Tk));
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; ++r) {
          float* s = S.data() + r * Tk;
          const int64_t i = i0 + r;
          const int64_t valid = p.causal ? std::min(Tk, i + 1) : Tk;  // keys j <= i under the causal mask
          float mx = ninf;
          for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, s[j]);
          float sum = 0.f;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j < valid; ++j) {
            s[j] = exp_nonpositive(s[j] - mx);
            sum += s[j];
          }
          const float inv = 1.f / sum;
          for (int64_t j = 0; j < valid; ++j) s[j] *= inv;
          for (int64_t j = valid; j < Tk; ++j) s[j] = 0.f;
          if (lse) lse->f32()[(b * H + h) * Tq + i] = mx + float(std::log(sum));
        }
        // O[i0:i0+n] [n, D] = P [n, Tk] · V [Tk, D]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(D), int(Tk), 1.f, S.data(),
                    int(Tk), vb, int(HD), 0.f, ob + i0 * HD, int(HD));
      }
    }
  }
}

}  // namespace db
