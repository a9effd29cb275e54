// CudaOps layers: linear (cuBLASLt), conv2d (cuDNN, plus bias and padding kernels), norms and attention
// (the project's kernels).
#include <cmath>

#include "cuda_check.h"
#include "cuda_ops.h"
#include "dreambooth/kernels/attention.h"
#include "dreambooth/kernels/elementwise.h"
#include "dreambooth/kernels/norm.h"

namespace db::cuda {

// x [M, K], w [N, K] (or [N, 1, 1, K]), b [N] -> y [M, N]: one GEMM with the bias epilogue.
void CudaOps::linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) {
  expect(x, "linear x");
  expect(w, "linear w");
  expect(y, "linear y");
  const int64_t N = w.dim(0), K = w.numel() / N;
  DB_CHECK(x.dim(-1) == K && x.dtype() == w.dtype() && y.dtype() == x.dtype(), "linear: input ", x.desc(),
           ", weight ", w.desc(), ", output ", y.desc());
  const int64_t M = x.numel() / K;
  DB_CHECK(y.numel() == M * N, "linear: output ", y.desc(), " expected [", M, ", ", N, "]");
  DB_CHECK(!b.defined() || (b.numel() == N && b.dtype() == y.dtype()), "linear: bias ", b.desc());
  GemmArgs g;
  g.m = M;
  g.n = N;
  g.k = K;
  g.trans_b = true;
  g.ab_type = x.dtype();
  g.c_type = y.dtype();
  g.a = x.raw();
  g.b = w.raw();
  g.c = y.raw();
  g.bias = b.defined() ? b.raw() : nullptr;
  gemm_->run(g);
}

// dx [M, K] = dy [M, N] w [N, K]; dw [N, K] f32 += dy^T x; db [N] f32 += column sums of dy.
void CudaOps::linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                              Tensor* db) {
  expect(dy, "linear_backward dy");
  expect(x, "linear_backward x");
  expect(w, "linear_backward w");
  const int64_t N = w.dim(0), K = w.numel() / N, M = x.numel() / K;
  DB_CHECK(dy.numel() == M * N && dy.dtype() == x.dtype(), "linear_backward: dy ", dy.desc(), " for input ",
           x.desc(), " and weight ", w.desc());
  if (dx) {
    DB_CHECK(dx->numel() == M * K && dx->dtype() == x.dtype(), "linear_backward: dx ", dx->desc());
    GemmArgs g;
    g.m = M;
    g.n = K;
    g.k = N;
    g.ab_type = dy.dtype();
    g.c_type = dx->dtype();
    g.a = dy.raw();
    g.b = w.raw();  // [N, K] = [k, n]
    g.c = dx->raw();
    gemm_->run(g);
  }
  if (dw) {
    DB_CHECK(dw->numel() == N * K && dw->dtype() == DType::F32, "linear_backward: dw ", dw->desc(), " (f32 [",
             N, ", ", K, "])");
    GemmArgs g;
    g.m = N;
    g.n = K;
    g.k = M;
    g.trans_a = true;  // dy stored [M, N] = [k, m]
    g.ab_type = dy.dtype();
    g.c_type = DType::F32;
    g.a = dy.raw();
    g.b = x.raw();  // [M, K] = [k, n]
    g.c = dw->raw();
    g.beta = 1.f;
    gemm_->run(g);
  }
  if (db) {
    DB_CHECK(db->numel() == N && db->dtype() == DType::F32, "linear_backward: db ", db->desc());
    std::shared_ptr<void> ws = scratch(kernels::column_sum_workspace(M, N));
    DB_CUDA(kernels::column_sum_add(dy.dtype(), dy.raw(), M, N, db->data<float>(), ws.get(), stream_));
  }
}

namespace {

bool pointwise(const Tensor& w, const Conv2dGeometry& g) {
  return w.dim(1) == 1 && w.dim(2) == 1 && g.stride == 1 && g.pad_top == 0 && g.pad_bottom == 0 &&
         g.pad_left == 0 && g.pad_right == 0;
}
bool symmetric(const Conv2dGeometry& g) {
  return g.pad_top == g.pad_bottom && g.pad_left == g.pad_right;
}
// The symmetric conv run on an explicitly padded input when the geometry pads asymmetrically.
ConvShape conv_shape(const Tensor& x, const Tensor& w, const Conv2dGeometry& g) {
  ConvShape s;
  s.B = int(x.dim(0));
  s.C = int(x.dim(3));
  s.O = int(w.dim(0));
  s.kh = int(w.dim(1));
  s.kw = int(w.dim(2));
  s.stride = g.stride;
  if (symmetric(g)) {
    s.H = int(x.dim(1));
    s.W = int(x.dim(2));
    s.pad_h = g.pad_top;
    s.pad_w = g.pad_left;
  } else {
    s.H = int(x.dim(1)) + g.pad_top + g.pad_bottom;
    s.W = int(x.dim(2)) + g.pad_left + g.pad_right;
  }
  return s;
}

}  // namespace

// x [B, H, W, I], w [O, kh, kw, I], b [O] -> y [B, Ho, Wo, O]
void CudaOps::conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                             const Conv2dGeometry& g) {
  expect(x, "conv2d x");
  expect(w, "conv2d w");
  expect(y, "conv2d y");
  DB_CHECK(x.ndim() == 4 && w.ndim() == 4 && w.dim(3) == x.dim(3) && x.dtype() == w.dtype() &&
               y.dtype() == x.dtype(),
           "conv2d: input ", x.desc(), ", weight ", w.desc(), ", output ", y.desc());
  const int64_t Ho = g.out_h(int(x.dim(1)), int(w.dim(1))), Wo = g.out_w(int(x.dim(2)), int(w.dim(2)));
  DB_CHECK(y.shape() == (Shape{x.dim(0), Ho, Wo, w.dim(0)}), "conv2d: output ", y.desc());
  if (pointwise(w, g)) return linear_forward(x, w, b, y);
  run_conv_forward(x, w, y, g);
  if (b.defined()) {
    DB_CHECK(b.numel() == w.dim(0) && b.dtype() == y.dtype(), "conv2d: bias ", b.desc());
    DB_CUDA(kernels::bias_add(y.dtype(), y.raw(), b.raw(), y.numel() / w.dim(0), int(w.dim(0)), stream_));
  }
}

void CudaOps::run_conv_forward(const Tensor& x, const Tensor& w, Tensor& y, const Conv2dGeometry& g) {
  const ConvShape s = conv_shape(x, w, g);
  if (symmetric(g)) return conv_->forward(s, x.dtype(), x.raw(), w.raw(), y.raw());
  Tensor padded = empty({s.B, s.H, s.W, s.C}, x.dtype());
  DB_CUDA(kernels::pad_nhwc(x.dtype(), x.raw(), padded.raw(), s.B, int(x.dim(1)), int(x.dim(2)), s.C,
                            g.pad_top, g.pad_bottom, g.pad_left, g.pad_right, stream_));
  conv_->forward(s, x.dtype(), padded.raw(), w.raw(), y.raw());
}

// dy [B, Ho, Wo, O] -> dx [B, H, W, I]; dw [O, kh, kw, I] f32 +=; db [O] f32 +=
void CudaOps::conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                              Tensor* db, const Conv2dGeometry& g) {
  expect(dy, "conv2d_backward dy");
  if (pointwise(w, g)) return linear_backward(dy, x, w, dx, dw, db);
  const ConvShape s = conv_shape(x, w, g);
  const int B = s.B, H = int(x.dim(1)), W = int(x.dim(2)), C = s.C;
  Tensor padded_x;  // the padded input, when the geometry is asymmetric and dw is wanted
  if (!symmetric(g) && dw) {
    padded_x = empty({s.B, s.H, s.W, s.C}, x.dtype());
    DB_CUDA(kernels::pad_nhwc(x.dtype(), x.raw(), padded_x.raw(), B, H, W, C, g.pad_top, g.pad_bottom,
                              g.pad_left, g.pad_right, stream_));
  }
  if (dx) {
    DB_CHECK(dx->shape() == x.shape() && dx->dtype() == x.dtype(), "conv2d_backward: dx ", dx->desc());
    if (symmetric(g)) {
      conv_->backward_data(s, dy.dtype(), dy.raw(), w.raw(), dx->raw());
    } else {
      Tensor dpadded = empty({s.B, s.H, s.W, s.C}, x.dtype());
      conv_->backward_data(s, dy.dtype(), dy.raw(), w.raw(), dpadded.raw());
      DB_CUDA(kernels::crop_nhwc(x.dtype(), dpadded.raw(), dx->raw(), B, H, W, C, g.pad_top, g.pad_bottom,
                                 g.pad_left, g.pad_right, stream_));
    }
  }
  if (dw) {
    DB_CHECK(dw->shape() == w.shape() && dw->dtype() == DType::F32, "conv2d_backward: dw ", dw->desc());
    conv_->backward_filter(s, dy.dtype(), symmetric(g) ? x.raw() : padded_x.raw(), dy.raw(),
                           dw->data<float>());
  }
  if (db) {
    const int64_t O = w.dim(0), M = dy.numel() / O;
    DB_CHECK(db->numel() == O && db->dtype() == DType::F32, "conv2d_backward: db ", db->desc());
    std::shared_ptr<void> ws = scratch(kernels::column_sum_workspace(M, O));
    DB_CUDA(kernels::column_sum_add(dy.dtype(), dy.raw(), M, O, db->data<float>(), ws.get(), stream_));
  }
}

void CudaOps::group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                 int groups, float eps, Activation act, Tensor* mean, Tensor* rstd) {
  expect(x, "group_norm x");
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype() && gamma.numel() == C && beta.numel() == C &&
               C % groups == 0 && (act == Activation::None || act == Activation::SiLU),
           "group_norm: x ", x.desc(), ", y ", y.desc(), ", gamma ", gamma.desc(), ", groups ", groups);
  DB_CHECK((!mean || mean->numel() == B * groups) && (!rstd || rstd->numel() == B * groups),
           "group_norm: statistics must be f32 [", B, ", ", groups, "]");
  DB_CUDA(kernels::group_norm_forward(x.dtype(), x.raw(), gamma.raw(), beta.raw(), y.raw(),
                                      mean ? mean->data<float>() : nullptr,
                                      rstd ? rstd->data<float>() : nullptr, int(B), int(N), int(C), groups,
                                      eps, act == Activation::SiLU, stream_));
}

void CudaOps::group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                  const Tensor& mean, const Tensor& rstd, int groups, Activation act,
                                  Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  expect(dy, "group_norm_backward dy");
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(dx && dx->shape() == x.shape() && dy.shape() == x.shape(), "group_norm_backward: dy ", dy.desc(),
           " for ", x.desc());
  DB_CHECK((!dgamma || dgamma->dtype() == DType::F32) && (!dbeta || dbeta->dtype() == DType::F32),
           "group_norm_backward: dgamma/dbeta must be f32");
  std::shared_ptr<void> ws = scratch(kernels::group_norm_backward_workspace(int(B), int(N), int(C), groups));
  DB_CUDA(kernels::group_norm_backward(
      x.dtype(), dy.raw(), x.raw(), gamma.raw(), beta.raw(), mean.data<float>(), rstd.data<float>(),
      dx->raw(), dgamma ? dgamma->data<float>() : nullptr, dbeta ? dbeta->data<float>() : nullptr, int(B),
      int(N), int(C), groups, act == Activation::SiLU, ws.get(), stream_));
}

void CudaOps::layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                 float eps, Tensor* mean, Tensor* rstd) {
  expect(x, "layer_norm x");
  const int64_t C = x.dim(-1), M = x.numel() / C;
  DB_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype() && gamma.numel() == C && beta.numel() == C,
           "layer_norm: x ", x.desc(), ", y ", y.desc(), ", gamma ", gamma.desc());
  DB_CUDA(kernels::layer_norm_forward(x.dtype(), x.raw(), gamma.raw(), beta.raw(), y.raw(),
                                      mean ? mean->data<float>() : nullptr,
                                      rstd ? rstd->data<float>() : nullptr, M, int(C), eps, stream_));
}

void CudaOps::layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                  const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) {
  expect(dy, "layer_norm_backward dy");
  const int64_t C = x.dim(-1), M = x.numel() / C;
  DB_CHECK(dx && dx->shape() == x.shape() && dy.shape() == x.shape(), "layer_norm_backward: dy ", dy.desc(),
           " for ", x.desc());
  std::shared_ptr<void> ws = scratch(kernels::layer_norm_backward_workspace(M, int(C)));
  DB_CUDA(kernels::layer_norm_backward(x.dtype(), dy.raw(), x.raw(), gamma.raw(), mean.data<float>(),
                                       rstd.data<float>(), dx->raw(),
                                       dgamma ? dgamma->data<float>() : nullptr,
                                       dbeta ? dbeta->data<float>() : nullptr, M, int(C), ws.get(), stream_));
}

namespace {
struct AttnDims {
  int B, H, Tq, Tk, D;
  float scale;
};
AttnDims attn_dims(const Tensor& q, const Tensor& k, const AttentionParams& p) {
  DB_CHECK(q.ndim() == 3 && k.ndim() == 3 && q.dim(0) == k.dim(0) && q.dim(2) == k.dim(2) &&
               q.dim(2) % p.heads == 0,
           "attention: q ", q.desc(), ", k ", k.desc(), ", heads ", p.heads);
  AttnDims d{int(q.dim(0)), p.heads, int(q.dim(1)), int(k.dim(1)), int(q.dim(2) / p.heads), p.scale};
  if (d.scale == 0.f) d.scale = 1.f / std::sqrt(float(d.D));
  return d;
}
}  // namespace

// The launchers pick the tensor-core flash kernels for bf16 at SD's head dims and the generic kernels
// otherwise (f32 test mode, the tiny test models, the VAE's head dim 512): kernels/attention.cu.
void CudaOps::attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                const AttentionParams& p, Tensor* lse) {
  for (const Tensor* t : {&q, &k, &v, static_cast<const Tensor*>(&out)}) expect(*t, "attention");
  const AttnDims d = attn_dims(q, k, p);
  DB_CHECK(v.shape() == k.shape() && out.shape() == q.shape() && k.dtype() == q.dtype() &&
               v.dtype() == q.dtype() && out.dtype() == q.dtype(),
           "attention: q ", q.desc(), ", k ", k.desc(), ", v ", v.desc(), ", out ", out.desc());
  DB_CHECK(!lse || (lse->numel() == int64_t(d.B) * d.H * d.Tq && lse->dtype() == DType::F32),
           "attention: lse ", lse ? lse->desc() : "");
  std::shared_ptr<void> ws = scratch(kernels::attention_forward_workspace(d.B, d.H, d.Tq, d.Tk, d.D));
  DB_CUDA(kernels::attention_forward(q.dtype(), q.raw(), k.raw(), v.raw(), out.raw(),
                                     lse ? lse->data<float>() : nullptr, d.B, d.H, d.Tq, d.Tk, d.D, d.scale,
                                     p.causal, ws.get(), stream_));
}

void CudaOps::attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                                 Tensor& dk, Tensor& dv) {
  for (const Tensor* t : {&dout, &q, &k, &v, &out, &lse, static_cast<const Tensor*>(&dq),
                          static_cast<const Tensor*>(&dk), static_cast<const Tensor*>(&dv)})
    expect(*t, "attention_backward");
  const AttnDims d = attn_dims(q, k, p);
  const DType t = q.dtype();
  DB_CHECK(
      dq.shape() == q.shape() && dk.shape() == k.shape() && dv.shape() == v.shape() &&
          dout.shape() == q.shape() && lse.numel() == int64_t(d.B) * d.H * d.Tq && lse.dtype() == DType::F32,
      "attention_backward: dq ", dq.desc(), ", dk ", dk.desc(), ", dv ", dv.desc(), ", lse ", lse.desc());
  for (const Tensor* x : {&dout, &k, &v, &out, static_cast<const Tensor*>(&dq),
                          static_cast<const Tensor*>(&dk), static_cast<const Tensor*>(&dv)})
    DB_CHECK(x->dtype() == t, "attention_backward: mixed dtypes (", x->desc(), " with q ", q.desc(), ")");
  std::shared_ptr<void> ws = scratch(kernels::attention_backward_workspace(d.B, d.H, d.Tq, d.Tk, d.D));
  DB_CUDA(kernels::attention_backward(t, dout.raw(), q.raw(), k.raw(), v.raw(), out.raw(), lse.data<float>(),
                                      dq.raw(), dk.raw(), dv.raw(), d.B, d.H, d.Tq, d.Tk, d.D, d.scale,
                                      p.causal, ws.get(), stream_));
}

}  // namespace db::cuda
