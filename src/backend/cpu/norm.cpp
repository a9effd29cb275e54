// CPU group norm (NHWC, optional fused SiLU) and layer norm. Statistics accumulate in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {

// acc[c] += sum over n of f(x[n, c]) for x [N, C], OpenMP over n with per-thread partial sums
// (contiguous passes over NHWC data; a loop per group would stride by C).
template <typename F>
void channel_sums(const float* x, int64_t N, int64_t C, double* acc, F f) {
  std::fill(acc, acc + C, 0.0);
#pragma omp parallel
  {
    std::vector<double> part(size_t(C), 0.0);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) part[size_t(c)] += f(x[n * C + c], c);
#pragma omp critical
    for (int64_t c = 0; c < C; ++c) acc[c] += part[size_t(c)];
  }
}

}  // namespace

// x [B, N, C] (N = H*W), gamma/beta [C] -> y [B, N, C]; mean/rstd [B, G]
// mean_g, var_g over (N, channels of g) (biased, two passes); y = x * a[c] + s[c] with
// a[c] = rstd_g gamma[c], s[c] = beta[c] - mean_g a[c]; then SiLU when fused.
void CpuOps::group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                int groups, float eps, Activation act, Tensor* mean, Tensor* rstd) {
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(groups > 0 && C % groups == 0, "group_norm: ", C, " channels not divisible by ", groups,
           " groups");
  DB_CHECK(gamma.numel() == C && beta.numel() == C, "group_norm: affine ", gamma.desc(), " for ", x.desc());
  DB_CHECK(y.numel() == x.numel(), "group_norm: output ", y.desc(), " for ", x.desc());
  DB_CHECK(act == Activation::None || act == Activation::SiLU, "group_norm: only SiLU may be fused");
  const int64_t G = groups, cg = C / G;
  const float* gp = gamma.f32();
  const float* bp = beta.f32();
  std::vector<double> acc(static_cast<size_t>(C)), mu(static_cast<size_t>(G)), cmu(static_cast<size_t>(C));
  std::vector<float> a(static_cast<size_t>(C)), s(static_cast<size_t>(C));
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x.f32() + b * N * C;
    float* yb = y.f32() + b * N * C;
    channel_sums(xb, N, C, acc.data(), [](float v, int64_t) { return double(v); });
    for (int64_t g = 0; g < G; ++g) {
      double t = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += acc[size_t(c)];
      mu[size_t(g)] = t / double(N * cg);
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) cmu[size_t(c)] = mu[size_t(g)];
    }
    channel_sums(xb, N, C, acc.data(), [&](float v, int64_t c) {
      const double d = double(v) - cmu[size_t(c)];
      return d * d;
    });
    for (int64_t g = 0; g < G; ++g) {
      double t = 0;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) t += acc[size_t(c)];
      const float r = float(1.0 / std::sqrt(t / double(N * cg) + double(eps)));
      const float m = float(mu[size_t(g)]);
      if (mean) mean->f32()[b * G + g] = m;
      if (rstd) rstd->f32()[b * G + g] = r;
      for (int64_t c = g * cg; c < (g + 1) * cg; ++c) {
        a[size_t(c)] = r * gp[c];
        s[size_t(c)] = bp[c] - m * a[size_t(c)];
      }
    }
    const bool silu = act == Activation::SiLU;
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const float* xr = xb + n * C;
      float* yr = yb + n * C;
      for (int64_t c = 0; c < C; ++c) {
        const float v = xr[c] * a[size_t(c)] + s[size_t(c)];
        yr[c] = silu ? v / (1.f + std::exp(-v)) : v;
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
