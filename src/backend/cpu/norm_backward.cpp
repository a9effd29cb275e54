// CPU group norm (+ fused SiLU) and layer norm backward from the saved mean/rstd.
//
// With xhat = (x - mean)·rstd, z = xhat·gamma + beta, y = act(z), dz = dy·act'(z), over a
// normalisation set of n elements:
//   dx = rstd · (dz·gamma - mean(dz·gamma) - xhat · mean(dz·gamma·xhat))
//   dgamma[c] += sum dz·xhat,  dbeta[c] += sum dz   (over every element of channel c)
// Reductions accumulate in double.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
// dy · silu'(z), silu'(z) = s (1 + z (1 - s)), s = sigmoid(z)
inline float silu_grad(float z, float dy) {
  const float s = 1.f / (1.f + std::exp(-z));
  return dy * s * (1.f + z * (1.f - s));
}
}  // namespace

// dy, x, dx [B, N, C] (N = H*W); mean/rstd [B, G]; dgamma/dbeta [C]
void CpuOps::group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                 const Tensor& mean, const Tensor& rstd, int groups, Activation act,
                                 Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(groups > 0 && C % groups == 0, "group_norm_backward: ", C, " channels not divisible by ", groups,
           " groups");
  DB_CHECK(dy.numel() == x.numel() && (!dx || dx->numel() == x.numel()), "group_norm_backward: dy ",
           dy.desc(), " for ", x.desc());
  DB_CHECK(gamma.numel() == C && beta.numel() == C, "group_norm_backward: affine ", gamma.desc(), " for ",
           x.desc());
  DB_CHECK(mean.numel() == B * groups && rstd.numel() == B * groups, "group_norm_backward: statistics ",
           mean.desc(), " expected [", B, ", ", groups, "]");
  DB_CHECK(act == Activation::None || act == Activation::SiLU, "group_norm_backward: only SiLU may be fused");
  DB_CHECK((!dgamma || dgamma->numel() == C) && (!dbeta || dbeta->numel() == C),
           "group_norm_backward: dgamma/dbeta expected [", C, "]");
  const int64_t G = groups, cg = C / G;
  const bool silu = act == Activation::SiLU;
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  const float* gp = gamma.f32();
  const float* bp = beta.f32();
  // per (b, c): sum dz and sum dz·xhat over the N positions; reduced over b afterwards in b order
  std::vector<double> sdz(size_t(B * C)), sdzx(size_t(B * C));
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= kCpuParallelMinWork)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t off = b * N * C + g * cg;
      const float m = mean.f32()[b * G + g], r = rstd.f32()[b * G + g];
      double* s1 = sdz.data() + b * C + g * cg;
      double* s2 = sdzx.data() + b * C + g * cg;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cg; ++c) {
          const int64_t i = off + n * C + c;
          const float xhat = (xp[i] - m) * r;
          const float dz = silu ? silu_grad(xhat * gp[g * cg + c] + bp[g * cg + c], dyp[i]) : dyp[i];
          s1[c] += dz;
          s2[c] += double(dz) * xhat;
        }
      if (!dx) continue;
      double a1 = 0, a2 = 0;  // sums of dz·gamma and dz·gamma·xhat over the group
      for (int64_t c = 0; c < cg; ++c) {
        a1 += s1[c] * gp[g * cg + c];
        a2 += s2[c] * gp[g * cg + c];
      }
      const float m1 = float(a1 / double(N * cg)), m2 = float(a2 / double(N * cg));
      float* dxp = dx->f32();
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < cg; ++c) {
          const int64_t i = off + n * C + c;
          const float xhat = (xp[i] - m) * r;
          const float dz = silu ? silu_grad(xhat * gp[g * cg + c] + bp[g * cg + c], dyp[i]) : dyp[i];
          dxp[i] = r * (dz * gp[g * cg + c] - m1 - xhat * m2);
        }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    double t1 = 0, t2 = 0;
    for (int64_t b = 0; b < B; ++b) {
      t1 += sdz[b * C + c];
      t2 += sdzx[b * C + c];
    }
    if (dbeta) dbeta->f32()[c] += float(t1);
    if (dgamma) dgamma->f32()[c] += float(t2);
  }
}

// dy, x, dx [M, C]; mean/rstd [M]; dgamma/dbeta [C]
void CpuOps::layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                 const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  const int64_t C = x.dim(-1), M = x.numel() / C;
  DB_CHECK(dy.numel() == x.numel() && (!dx || dx->numel() == x.numel()), "layer_norm_backward: dy ",
           dy.desc(), " for ", x.desc());
  DB_CHECK(gamma.numel() == C && mean.numel() == M && rstd.numel() == M, "layer_norm_backward: gamma ",
           gamma.desc(), " statistics ", mean.desc(), " for ", x.desc());
  DB_CHECK((!dgamma || dgamma->numel() == C) && (!dbeta || dbeta->numel() == C),
           "layer_norm_backward: dgamma/dbeta expected [", C, "]");
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  const float* gp = gamma.f32();
  const float* mp = mean.f32();
  const float* rp = rstd.f32();
  if (dx) {
    float* dxp = dx->f32();
#pragma omp parallel for schedule(static) if (M * C >= kCpuParallelMinWork)
    for (int64_t m = 0; m < M; ++m) {
      const float* xr = xp + m * C;
      const float* dyr = dyp + m * C;
      double a1 = 0, a2 = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double d = double(dyr[c]) * gp[c];
        a1 += d;
        a2 += d * ((xr[c] - mp[m]) * rp[m]);
      }
      const float m1 = float(a1 / double(C)), m2 = float(a2 / double(C));
      for (int64_t c = 0; c < C; ++c) {
        const float xhat = (xr[c] - mp[m]) * rp[m];
        dxp[m * C + c] = rp[m] * (dyr[c] * gp[c] - m1 - xhat * m2);
      }
    }
  }
  if (!dgamma && !dbeta) return;
  constexpr int64_t kBlock = 32;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (M * C >= kCpuParallelMinWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, cb = std::min(kBlock, C - c0);
    double sg[kBlock] = {}, sb[kBlock] = {};
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < cb; ++c) {
        const float dyv = dyp[m * C + c0 + c];
        sg[c] += double(dyv) * ((xp[m * C + c0 + c] - mp[m]) * rp[m]);
        sb[c] += dyv;
      }
    for (int64_t c = 0; c < cb; ++c) {
      if (dgamma) dgamma->f32()[c0 + c] += float(sg[c]);
      if (dbeta) dbeta->f32()[c0 + c] += float(sb[c]);
    }
  }
}

}  // namespace db
