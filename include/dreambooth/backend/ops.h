#pragma once
// Ops: the coarse backend interface model code calls (DESIGN.md decision 4). Model and nn/ code never
// loops over elements; it calls these. CpuOps (backend/cpu_ops.h) is the fp32 reference; a CudaOps
// implements the same interface. Every op writes into a caller-allocated output (from empty() or an
// Arena) so a backend controls where memory lives.
//
// Naming leaves room for training: each forward is `X_forward`; its `X_backward` goes next to it.
// Forwards take optional outputs for what a backward needs (norm statistics, attention row
// log-sum-exp); pass nullptr when only inference runs.
//
// Backward (the training side): gradients of parameters (dw, db, dgamma, dbeta, dtable) ACCUMULATE
// (+=) into the caller's gradient buffer, which the trainer zeroes once per optimizer step, so
// gradient-accumulation micro-steps and a parameter used twice just add. Gradients of activations
// (dx, dq, ...) OVERWRITE. A null gradient pointer skips that gradient (frozen weight, network input).
// No two threads add into one element; a backend's own loops reduce in a fixed order, so they do not
// depend on the thread count (the CPU's OpenBLAS GEMMs are reproducible only for a fixed OpenBLAS
// thread count: with large reductions it splits them by thread). add_forward / scale_forward need no backward
// op: da = alpha dy, db = beta dy and dx = s dy are scale_forward (or nothing when the factor is 1).
//
// Layouts (decision 1): feature maps NHWC [B, H, W, C]; sequences [B, T, C]; linear weights [N, K]
// (PyTorch's); conv weights [O, kh, kw, I]. All tensors contiguous f32 on the backend's device.
#include <cstdint>

#include "dreambooth/core/tensor.h"

namespace db {

struct Conv2dGeometry {
  int stride = 1;
  // Padding per side. SD's Downsample2D uses 1 on all sides with stride 2; the VAE encoder's uses
  // padding 0 after F.pad(x, (0, 1, 0, 1)), i.e. top 0, bottom 1, left 0, right 1.
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  static Conv2dGeometry same(int pad, int stride = 1) { return {stride, pad, pad, pad, pad}; }
  int out_h(int h, int kh) const { return (h + pad_top + pad_bottom - kh) / stride + 1; }
  int out_w(int w, int kw) const { return (w + pad_left + pad_right - kw) / stride + 1; }
};

struct AttentionParams {
  int heads = 1;
  float scale = 0.f;    // 0 means 1/sqrt(head_dim)
  bool causal = false;  // key j > query i masked out (CLIP text encoder)
  bool upcast = false;  // diffusers upcast_attention/upcast_softmax: a no-op in fp32, kept for bf16
};

struct TimestepEmbeddingParams {
  bool flip_sin_to_cos = true;
  float downscale_freq_shift = 0.f;
  float scale = 1.f;
  float max_period = 10000.f;
};

enum class Activation { None, SiLU, GELU, QuickGELU };

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // Uninitialised f32 tensor on this backend's device.
  virtual Tensor empty(const Shape& shape) = 0;
  // Copies host f32 data into a tensor of this backend (identity copy on CPU).
  virtual void upload(const float* host, Tensor& dst) = 0;
  virtual void download(const Tensor& src, float* host) = 0;

  // ---- dense ----
  // y[M, N] = x[M, K] · w[N, K]^T + b[N]; x may have any leading dims (M = numel / K). b optional
  // (undefined Tensor). w may also be a 1x1 conv weight [N, 1, 1, K] (identical in NHWC).
  virtual void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) = 0;
  // dy[M, N], x[M, K], w[N, K] -> dx[M, K] = dy · w; dw[N, K] += dy^T · x; db[N] += sum_m dy.
  virtual void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                               Tensor* db) = 0;

  // y[B, Ho, Wo, O] = conv(x[B, H, W, I], w[O, kh, kw, I]) + b[O] (b optional), cross-correlation
  // as torch.nn.Conv2d. Ho = (H + pad_top + pad_bottom - kh) / stride + 1.
  virtual void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                              const Conv2dGeometry& g) = 0;
  // dy[B, Ho, Wo, O] -> dx[B, H, W, I] (transposed conv: dcol = dy · w, col2im as a gather);
  // dw[O, kh, kw, I] += dy^T · im2col(x); db[O] += sum over B, Ho, Wo of dy.
  virtual void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                               Tensor* db, const Conv2dGeometry& g) = 0;

  // ---- normalisation ----
  // Group norm over NHWC x[B, H, W, C] (any [B, ..., C]): groups of C/G consecutive channels,
  // statistics over (spatial, channels in group); y = (x - mean) * rstd * gamma[c] + beta[c], then
  // SiLU when act == SiLU. mean/rstd [B, G] written when non-null (for backward).
  virtual void group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                  int groups, float eps, Activation act, Tensor* mean, Tensor* rstd) = 0;
  // Backward of group_norm_forward from its input x and saved mean/rstd [B, G]. With act == SiLU the
  // pre-activation z = xhat·gamma + beta is recomputed (nothing extra saved). dy, dx [B, ..., C];
  // dgamma/dbeta [C] accumulate.
  virtual void group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                                   const Tensor& mean, const Tensor& rstd, int groups, Activation act,
                                   Tensor* dx, Tensor* dgamma, Tensor* dbeta) = 0;
  // Layer norm over the last dim of x[M, C]; mean/rstd [M] written when non-null.
  virtual void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y,
                                  float eps, Tensor* mean, Tensor* rstd) = 0;
  // dy, x, dx [M, C]; saved mean/rstd [M]; dgamma/dbeta [C] accumulate.
  virtual void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                                   const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) = 0;

  // ---- attention ----
  // out[B, Tq, H*D] = softmax(scale · q_h k_h^T (+ causal mask)) v_h for each head h, with
  // q[B, Tq, H*D], k[B, Tk, H*D], v[B, Tk, H*D]. lse [B, H, Tq] (row log-sum-exp of the scaled
  // scores) written when non-null, for backward.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                                 const AttentionParams& p, Tensor* lse) = 0;
  // Softmax backward per (b, h), P recomputed from q, k and the saved lse [B, H, Tq]:
  // dV = P^T dO, dP = dO V^T, dS = P ∘ (dP − rowsum(dO ∘ O)), dQ = scale dS K, dK = scale dS^T Q.
  // dout, out, dq [B, Tq, H*D]; dk, dv [B, Tk, H*D] (all overwritten).
  virtual void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                                  Tensor& dk, Tensor& dv) = 0;

  // ---- elementwise ----
  // y = act(x): SiLU x*sigmoid(x); GELU exact 0.5x(1+erf(x/sqrt2)); QuickGELU x*sigmoid(1.702x).
  virtual void activation_forward(const Tensor& x, Tensor& y, Activation act) = 0;
  // dx = dy · act'(x) from the activation's input x (dx may alias dy).
  virtual void activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation act) = 0;
  // GEGLU (diffusers): x[M, 2N] -> hidden, gate = chunk(2, dim=-1); y[M, N] = hidden * gelu(gate).
  virtual void geglu_forward(const Tensor& x, Tensor& y) = 0;
  // x[M, 2N], dy[M, N] -> dx[M, 2N]: d hidden = dy · gelu(gate), d gate = dy · hidden · gelu'(gate).
  virtual void geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) = 0;
  // y = alpha * a + beta * b (same shapes; y may alias a or b). Residual add, output scale.
  virtual void add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha = 1.f,
                           float beta = 1.f) = 0;
  // x[B, N, C] += v[B, C] broadcast over N (ResnetBlock2D's time embedding, in place).
  virtual void add_broadcast_forward(Tensor& x, const Tensor& v) = 0;
  // dv[B, C] = sum over N of dy[B, N, C] (overwritten: v is an activation, the time embedding); dx = dy.
  virtual void add_broadcast_backward(const Tensor& dy, Tensor& dv) = 0;
  // y = s * x (y may alias x).
  virtual void scale_forward(const Tensor& x, Tensor& y, float s) = 0;
  // y[..., Ca + Cb] = cat(a[..., Ca], b[..., Cb], dim=-1): NHWC channel concat (UNet skips).
  virtual void concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) = 0;
  // Split dy[..., Ca + Cb] into da[..., Ca] and db[..., Cb] (either may be null).
  virtual void concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) = 0;

  // ---- resampling / embeddings ----
  // y[B, 2H, 2W, C] = nearest-neighbour 2x upsample of x[B, H, W, C].
  virtual void upsample_nearest2x_forward(const Tensor& x, Tensor& y) = 0;
  // dx[B, H, W, C] = sum of each 2x2 block of dy[B, 2H, 2W, C].
  virtual void upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) = 0;
  // diffusers get_timestep_embedding: t[B] (float) -> y[B, dim]; freq_i = exp(-ln(max_period) i /
  // (half - shift)); [sin(t f), cos(t f)], swapped to [cos, sin] when flip_sin_to_cos; odd dim padded 0.
  virtual void timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) = 0;
  // y[..., C] = table[ids[...], :] with ids I32 or I64 (checked against the table's rows).
  virtual void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) = 0;
  // dtable[V, C] += scatter of dy[..., C] by ids, repeated ids summed in position order.
  virtual void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) = 0;
};

}  // namespace db
