// CPU conv2d backward (NHWC, weights [O, kh, kw, I]), over the same chunks of output pixels as the
// forward: dw += dy_chunk^T · im2col(x); dcol = dy_chunk · w, then col2im as a gather (each input
// pixel sums the dcol entries that read it), so no two threads ever add into one element.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {

constexpr int64_t kColFloats = int64_t(8) << 20;  // 32 MiB per im2col / dcol buffer

struct ConvDims {
  int64_t B, H, W, I, O, KH, KW, Ho, Wo;
};

// col [mc, KH*KW*I]: receptive fields of output pixels m0 .. m0+mc of one image xb [H, W, I]
void im2col(const float* xb, const ConvDims& d, const Conv2dGeometry& g, int64_t m0, int64_t mc, float* col) {
  const int64_t K = d.KH * d.KW * d.I;
#pragma omp parallel for schedule(static) if (mc * K >= kCpuParallelMinWork)
  for (int64_t mi = 0; mi < mc; ++mi) {
    const int64_t m = m0 + mi, oh = m / d.Wo, ow = m % d.Wo;
    for (int64_t kh = 0; kh < d.KH; ++kh) {
      const int64_t ih = oh * g.stride - g.pad_top + kh;
      for (int64_t kw = 0; kw < d.KW; ++kw) {
        const int64_t iw = ow * g.stride - g.pad_left + kw;
        float* dst = col + mi * K + (kh * d.KW + kw) * d.I;
        if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W)
          std::memset(dst, 0, size_t(d.I) * sizeof(float));
        else
          std::memcpy(dst, xb + (ih * d.W + iw) * d.I, size_t(d.I) * sizeof(float));
      }
    }
  }
}

// dxb [H, W, I] += the dcol [mc, KH*KW*I] rows of output pixels m0 .. m0+mc that read each input pixel.
// Parallel over input rows; per element the order is (kh, kw), the same for any thread count.
void col2im_gather(const float* dcol, const ConvDims& d, const Conv2dGeometry& g, int64_t m0, int64_t mc,
                   float* dxb) {
  const int64_t K = d.KH * d.KW * d.I, s = g.stride;
  const int64_t oh_lo = m0 / d.Wo, oh_hi = (m0 + mc - 1) / d.Wo;
  const int64_t ih_lo = std::max<int64_t>(0, oh_lo * s - g.pad_top);
  const int64_t ih_hi = std::min<int64_t>(d.H - 1, oh_hi * s - g.pad_top + d.KH - 1);
#pragma omp parallel for schedule(static) if (mc * K >= kCpuParallelMinWork)
  for (int64_t ih = ih_lo; ih <= ih_hi; ++ih) {
    for (int64_t iw = 0; iw < d.W; ++iw) {
      float* dst = dxb + (ih * d.W + iw) * d.I;
      for (int64_t kh = 0; kh < d.KH; ++kh) {
        const int64_t th = ih + g.pad_top - kh;  // = oh * stride
        if (th < 0 || th % s) continue;
        const int64_t oh = th / s;
        if (oh >= d.Ho) continue;
        for (int64_t kw = 0; kw < d.KW; ++kw) {
          const int64_t tw = iw + g.pad_left - kw;  // = ow * stride
          if (tw < 0 || tw % s) continue;
          const int64_t ow = tw / s;
          if (ow >= d.Wo) continue;
          const int64_t m = oh * d.Wo + ow;
          if (m < m0 || m >= m0 + mc) continue;
          const float* src = dcol + (m - m0) * K + (kh * d.KW + kw) * d.I;
          for (int64_t i = 0; i < d.I; ++i) dst[i] += src[i];
        }
      }
    }
  }
}

}  // namespace

// dy [B, Ho, Wo, O], x [B, H, W, I], w [O, kh, kw, I] -> dx [B, H, W, I]; dw [O, kh, kw, I] +=; db [O] +=
void CpuOps::conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                             Tensor* db, const Conv2dGeometry& g) {
  DB_CHECK(x.ndim() == 4 && w.ndim() == 4 && w.dim(3) == x.dim(3), "conv2d_backward: input ", x.desc(),
           " weight ", w.desc());
  ConvDims d{x.dim(0), x.dim(1), x.dim(2), x.dim(3), w.dim(0), w.dim(1), w.dim(2), 0, 0};
  d.Ho = g.out_h(int(d.H), int(d.KH));
  d.Wo = g.out_w(int(d.W), int(d.KW));
  DB_CHECK(dy.shape() == (Shape{d.B, d.Ho, d.Wo, d.O}), "conv2d_backward: dy ", dy.desc(), " expected ",
           shape_str({d.B, d.Ho, d.Wo, d.O}));
  DB_CHECK(!dx || dx->shape() == x.shape(), "conv2d_backward: dx ", dx->desc(), " for input ", x.desc());
  DB_CHECK(!dw || dw->shape() == w.shape(), "conv2d_backward: dw ", dw->desc(), " for weight ", w.desc());
  DB_CHECK(!db || db->numel() == d.O, "conv2d_backward: db ", db->desc(), " expected [", d.O, "]");
  const int64_t K = d.KH * d.KW * d.I, M = d.Ho * d.Wo;
  const float* dyp = dy.f32();
  const float* wp = w.f32();
  if (db) cpu_column_sum_add(dyp, d.B * M, d.O, d.O, db->f32());
  const bool pointwise = d.KH == 1 && d.KW == 1 && g.stride == 1 && g.pad_top == 0 && g.pad_left == 0 &&
                         g.pad_bottom == 0 && g.pad_right == 0;
  if (pointwise) {  // a GEMM over [B*H*W, I]
    const int rows = int(d.B * M);
    if (dx)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, int(d.I), int(d.O), 1.f, dyp, int(d.O), wp,
                  int(d.I), 0.f, dx->f32(), int(d.I));
    if (dw)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(d.O), int(d.I), rows, 1.f, dyp, int(d.O),
                  x.f32(), int(d.I), 1.f, dw->f32(), int(d.I));
    return;
  }
  if (!dx && !dw) return;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(M, kColFloats / K));
  std::vector<float> col(dw ? size_t(chunk * K) : 0), dcol(dx ? size_t(chunk * K) : 0);
  if (dx) dx->fill(0.f);
  for (int64_t bi = 0; bi < d.B; ++bi) {
    const float* xb = x.f32() + bi * d.H * d.W * d.I;
    for (int64_t m0 = 0; m0 < M; m0 += chunk) {
      const int64_t mc = std::min(chunk, M - m0);
      const float* dyc = dyp + (bi * M + m0) * d.O;  // [mc, O]
      if (dw) {
        im2col(xb, d, g, m0, mc, col.data());
        // dw [O, K] += dy_c^T [O, mc] · col [mc, K]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(d.O), int(K), int(mc), 1.f, dyc, int(d.O),
                    col.data(), int(K), 1.f, dw->f32(), int(K));
      }
      if (dx) {
        // dcol [mc, K] = dy_c [mc, O] · w [O, K]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(mc), int(K), int(d.O), 1.f, dyc, int(d.O),
                    wp, int(K), 0.f, dcol.data(), int(K));
        col2im_gather(dcol.data(), d, g, m0, mc, dx->f32() + bi * d.H * d.W * d.I);
      }
    }
  }
}

}  // namespace db
