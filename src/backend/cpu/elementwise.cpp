// CPU elementwise ops: activations, GEGLU, residual add / scale, broadcast add, channel concat.
#include <cmath>
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
inline float gelu_erf(float x) {
  return 0.5f * x * (1.f + std::erf(x * float(M_SQRT1_2)));
}
inline float sigmoid(float x) {
  return 1.f / (1.f + std::exp(-x));
}
}  // namespace

void CpuOps::activation_forward(const Tensor& x, Tensor& y, Activation act) {
  DB_CHECK(y.numel() == x.numel(), "activation: output ", y.desc(), " for ", x.desc());
  const int64_t n = x.numel();
  const float* xp = x.f32();
  float* yp = y.f32();
  switch (act) {
    case Activation::None:
      if (yp != xp) std::memcpy(yp, xp, size_t(n) * sizeof(float));
      break;
    case Activation::SiLU:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] * sigmoid(xp[i]);
      break;
    case Activation::GELU:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) yp[i] = gelu_erf(xp[i]);
      break;
    case Activation::QuickGELU:
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] * sigmoid(1.702f * xp[i]);
      break;
  }
}

// x [M, 2N] -> y [M, N] = x[:, :N] * gelu(x[:, N:])
void CpuOps::geglu_forward(const Tensor& x, Tensor& y) {
  const int64_t N = y.dim(-1), M = y.numel() / N;
  DB_CHECK(x.dim(-1) == 2 * N && x.numel() == 2 * M * N, "geglu: input ", x.desc(), " for output ", y.desc());
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    const float* hidden = xp + m * 2 * N;
    const float* gate = hidden + N;
    for (int64_t j = 0; j < N; ++j) yp[m * N + j] = hidden[j] * gelu_erf(gate[j]);
  }
}

void CpuOps::add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha, float beta) {
  DB_CHECK(a.numel() == b.numel() && y.numel() == a.numel(), "add: ", a.desc(), " + ", b.desc(), " -> ",
           y.desc());
  const int64_t n = a.numel();
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* yp = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] = alpha * ap[i] + beta * bp[i];
}

// x [B, N, C] += v [B, C]
void CpuOps::add_broadcast_forward(Tensor& x, const Tensor& v) {
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(v.numel() == B * C, "add_broadcast: ", v.desc(), " onto ", x.desc());
  float* xp = x.f32();
  const float* vp = v.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) xp[(b * N + n) * C + c] += vp[b * C + c];
}

void CpuOps::scale_forward(const Tensor& x, Tensor& y, float s) {
  DB_CHECK(y.numel() == x.numel(), "scale: output ", y.desc(), " for ", x.desc());
  const int64_t n = x.numel();
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) yp[i] = s * xp[i];
}

// a [M, Ca], b [M, Cb] -> y [M, Ca + Cb]
void CpuOps::concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  const int64_t Ca = a.dim(-1), Cb = b.dim(-1), M = a.numel() / Ca;
  DB_CHECK(b.numel() == M * Cb && y.numel() == M * (Ca + Cb) && y.dim(-1) == Ca + Cb, "concat: ", a.desc(),
           " + ", b.desc(), " -> ", y.desc());
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* yp = y.f32();
#pragma omp parallel for schedule(static)
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(yp + m * (Ca + Cb), ap + m * Ca, size_t(Ca) * sizeof(float));
    std::memcpy(yp + m * (Ca + Cb) + Ca, bp + m * Cb, size_t(Cb) * sizeof(float));
  }
}

}  // namespace db
