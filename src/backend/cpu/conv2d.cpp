// CPU conv2d (NHWC, weights [O, kh, kw, I]): im2col over chunks of output pixels + one GEMM per chunk.
// A 1x1 stride-1 unpadded conv is a plain GEMM over the [B*H*W, I] input.
#include <algorithm>
#include <cstring>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {
constexpr int64_t kIm2colFloats = int64_t(8) << 20;  // 32 MiB of im2col workspace per chunk
}

// x [B, H, W, I], w [O, kh, kw, I], b [O] -> y [B, Ho, Wo, O]
void CpuOps::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                            const Conv2dGeometry& g) {
  DB_CHECK(x.ndim() == 4 && w.ndim() == 4, "conv2d: expected NHWC input and [O, kh, kw, I] weight, got ",
           x.desc(), " and ", w.desc());
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), I = x.dim(3);
  const int64_t O = w.dim(0), KH = w.dim(1), KW = w.dim(2);
  DB_CHECK(w.dim(3) == I, "conv2d: weight ", w.desc(), " does not match input ", x.desc());
  const int64_t Ho = g.out_h(int(H), int(KH)), Wo = g.out_w(int(W), int(KW));
  DB_CHECK(y.shape() == (Shape{B, Ho, Wo, O}), "conv2d: output ", y.desc(), " expected ",
           shape_str({B, Ho, Wo, O}));
  DB_CHECK(!b.defined() || b.numel() == O, "conv2d: bias ", b.desc(), " expected [", O, "]");
  const float* xp = x.f32();
  const float* wp = w.f32();
  float* yp = y.f32();
  const float* bp = b.defined() ? b.f32() : nullptr;
  const int64_t K = KH * KW * I, M = Ho * Wo;
  if (bp) {
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < B * M; ++m) std::memcpy(yp + m * O, bp, size_t(O) * sizeof(float));
  }
  const float beta = bp ? 1.f : 0.f;
  const bool pointwise = KH == 1 && KW == 1 && g.stride == 1 && g.pad_top == 0 && g.pad_left == 0 &&
                         g.pad_bottom == 0 && g.pad_right == 0;
  if (pointwise) {
    cpu_gemm_nt(int(B * M), int(O), int(I), 1.f, xp, int(I), wp, int(I), beta, yp, int(O));
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(M, kIm2colFloats / K));
  std::vector<float> col(size_t(chunk * K));
  for (int64_t bi = 0; bi < B; ++bi) {
    const float* xb = xp + bi * H * W * I;
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
      const int64_t mc = std::min(chunk, M - m0);
      // col [mc, kh*kw*I]: the receptive field of each output pixel, zero outside the input
#pragma omp parallel for schedule(static)
      for (int64_t mi = 0; mi < mc; ++mi) {
        const int64_t m = m0 + mi, oh = m / Wo, ow = m % Wo;
        float* c = col.data() + mi * K;
        for (int64_t kh = 0; kh < KH; ++kh) {
          const int64_t ih = oh * g.stride - g.pad_top + kh;
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t iw = ow * g.stride - g.pad_left + kw;
            float* dst = c + (kh * KW + kw) * I;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W)
              std::memset(dst, 0, size_t(I) * sizeof(float));
            else
              std::memcpy(dst, xb + (ih * W + iw) * I, size_t(I) * sizeof(float));
          }
        }
      }
      cpu_gemm_nt(int(mc), int(O), int(K), 1.f, col.data(), int(K), wp, int(K), beta, yp + (bi * M + m0) * O,
                  int(O));
    }
  }
}

}  // namespace db
