// CPU group norm (NHWC, optional fused SiLU) and layer norm. Statistics accumulate in double.
#include <cmath>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

// x [B, N, C] (N = H*W), gamma/beta [C] -> y [B, N, C]; mean/rstd [B, G]
void CpuOps::group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                int groups, float eps, Activation act, Tensor* mean, Tensor* rstd) {
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(groups > 0 && C % groups == 0, "group_norm: ", C, " channels not divisible by ", groups,
           " groups");
  DB_CHECK(gamma.numel() == C && beta.numel() == C, "group_norm: affine ", gamma.desc(), " for ", x.desc());
  DB_CHECK(y.numel() == x.numel(), "group_norm: output ", y.desc(), " for ", x.desc());
  DB_CHECK(act == Activation::None || act == Activation::SiLU, "group_norm: only SiLU may be fused");
  const int64_t G = groups, cg = C / G;
  const float* xp = x.f32();
  float* yp = y.f32();
  const float* gp = gamma.f32();
  const float* bp = beta.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      const float* xb = xp + b * N * C + g * cg;
      float* yb = yp + b * N * C + g * cg;
      double s = 0, s2 = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cg; ++c) s += xb[n * C + c];
      const double mu = s / double(N * cg);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cg; ++c) {
          const double d = xb[n * C + c] - mu;
          s2 += d * d;
        }
      const float r = float(1.0 / std::sqrt(s2 / double(N * cg) + double(eps)));  // biased variance
      const float m = float(mu);
      if (mean) mean->f32()[b * G + g] = m;
      if (rstd) rstd->f32()[b * G + g] = r;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cg; ++c) {
          float v = (xb[n * C + c] - m) * r * gp[g * cg + c] + bp[g * cg + c];
          if (act == Activation::SiLU) v = v / (1.f + std::exp(-v));
          yb[n * C + c] = v;
        }
    }
  }
}

// x [M, C], gamma/beta [C] -> y [M, C]; mean/rstd [M]
void CpuOps::layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                float eps, Tensor* mean, Tensor* rstd) {
  const int64_t C = x.dim(-1), M = x.numel() / C;
  DB_CHECK(gamma.numel() == C && beta.numel() == C, "layer_norm: affine ", gamma.desc(), " for ", x.desc());
  DB_CHECK(y.numel() == x.numel(), "layer_norm: output ", y.desc(), " for ", x.desc());
  const float* xp = x.f32();
  float* yp = y.f32();
  const float* gp = gamma.f32();
  const float* bp = beta.f32();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = xp + m * C;
    float* yr = yp + m * C;
    double s = 0, s2 = 0;
    for (int64_t c = 0; c < C; ++c) s += xr[c];
    const double mu = s / double(C);
    for (int64_t c = 0; c < C; ++c) s2 += (xr[c] - mu) * (xr[c] - mu);
    const float r = float(1.0 / std::sqrt(s2 / double(C) + double(eps)));
    const float mf = float(mu);
    if (mean) mean->f32()[m] = mf;
    if (rstd) rstd->f32()[m] = r;
    for (int64_t c = 0; c < C; ++c) yr[c] = (xr[c] - mf) * r * gp[c] + bp[c];
  }
}

}  // namespace db
