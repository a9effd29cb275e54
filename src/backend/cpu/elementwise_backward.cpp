// CPU elementwise backward: activations, GEGLU, broadcast add, channel concat.
#include <cmath>
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
inline float sigmoid(float x) {
  return 1.f / (1.f + std::exp(-x));
}
inline float gelu_erf(float x) {
  return 0.5f * x * (1.f + std::erf(x * float(M_SQRT1_2)));
}
// d/dx 0.5 x (1 + erf(x/√2)) = Φ(x) + x φ(x)
inline float gelu_erf_grad(float x) {
  constexpr float kInvSqrt2Pi = 0.3989422804014327f;
  return 0.5f * (1.f + std::erf(x * float(M_SQRT1_2))) + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
}
}  // namespace

// x, dy, dx [...] (dx may alias dy)
void CpuOps::activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation act) {
  DB_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel(), "activation_backward: dy ", dy.desc(), " dx ",
           dx.desc(), " for ", x.desc());
  const int64_t n = x.numel();
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
  switch (act) {
    case Activation::None:
      if (dxp != dyp) std::memcpy(dxp, dyp, size_t(n) * sizeof(float));
      break;
    case Activation::SiLU:  // s (1 + x (1 - s))
#pragma omp parallel for schedule(static) if (n >= kCpuParallelMinWork)
      for (int64_t i = 0; i < n; ++i) {
        const float s = sigmoid(xp[i]);
        dxp[i] = dyp[i] * s * (1.f + xp[i] * (1.f - s));
      }
      break;
    case Activation::GELU:
#pragma omp parallel for schedule(static) if (n >= kCpuParallelMinWork)
      for (int64_t i = 0; i < n; ++i) dxp[i] = dyp[i] * gelu_erf_grad(xp[i]);
      break;
    case Activation::QuickGELU:  // s + 1.702 x s (1 - s), s = sigmoid(1.702 x)
#pragma omp parallel for schedule(static) if (n >= kCpuParallelMinWork)
      for (int64_t i = 0; i < n; ++i) {
        const float s = sigmoid(1.702f * xp[i]);
        dxp[i] = dyp[i] * (s + 1.702f * xp[i] * s * (1.f - s));
      }
      break;
  }
}

// x [M, 2N] (hidden | gate), dy [M, N] -> dx [M, 2N]
void CpuOps::geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  const int64_t N = dy.dim(-1), M = dy.numel() / N;
  DB_CHECK(x.dim(-1) == 2 * N && x.numel() == 2 * M * N && dx.numel() == x.numel(), "geglu_backward: input ",
           x.desc(), " dx ", dx.desc(), " for dy ", dy.desc());
  const float* xp = x.f32();
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
#pragma omp parallel for schedule(static) if (M * N >= kCpuParallelMinWork)
  for (int64_t m = 0; m < M; ++m) {
    const float* hidden = xp + m * 2 * N;
    const float* gate = hidden + N;
    const float* d = dyp + m * N;
    float* dh = dxp + m * 2 * N;
    float* dg = dh + N;
    for (int64_t j = 0; j < N; ++j) {
      dh[j] = d[j] * gelu_erf(gate[j]);
      dg[j] = d[j] * hidden[j] * gelu_erf_grad(gate[j]);
    }
  }
}

// dy [B, N, C] -> dv [B, C] = sum over N
void CpuOps::add_broadcast_backward(const Tensor& dy, Tensor& dv) {
  const int64_t B = dy.dim(0), C = dy.dim(-1), N = dy.numel() / (B * C);
  DB_CHECK(dv.numel() == B * C, "add_broadcast_backward: dv ", dv.desc(), " for dy ", dy.desc());
  dv.fill(0.f);
  for (int64_t b = 0; b < B; ++b) cpu_column_sum_add(dy.f32() + b * N * C, N, C, C, dv.f32() + b * C);
}

// dy [M, Ca + Cb] -> da [M, Ca], db [M, Cb]
void CpuOps::concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) {
  const int64_t C = dy.dim(-1);
  const int64_t Ca = da ? da->dim(-1) : C - db->dim(-1), Cb = C - Ca, M = dy.numel() / C;
  DB_CHECK(Ca >= 0 && Cb >= 0 && (!da || da->numel() == M * Ca) && (!db || db->numel() == M * Cb),
           "concat_channels_backward: dy ", dy.desc(), " into ", da ? da->desc() : "-", " + ",
           db ? db->desc() : "-");
  const float* dyp = dy.f32();
#pragma omp parallel for schedule(static) if (M * C >= kCpuParallelMinWork)
  for (int64_t m = 0; m < M; ++m) {
    if (da) std::memcpy(da->f32() + m * Ca, dyp + m * C, size_t(Ca) * sizeof(float));
    if (db) std::memcpy(db->f32() + m * Cb, dyp + m * C + Ca, size_t(Cb) * sizeof(float));
  }
}

}  // namespace db
