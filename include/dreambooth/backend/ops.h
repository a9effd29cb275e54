#pragma once
// Ops: the coarse backend interface model code calls (DESIGN.md decision 4). Model, nn/ and pipeline
// code never touches the elements of a tensor that may live on a device; it calls these. CpuOps
// (backend/cpu_ops.h) is the fp32 reference; CudaOps implements the same interface on a GPU.
//
// Memory. Every op writes into caller-allocated outputs, and every tensor an op sees comes from this
// backend's empty() (pooled memory, reused step to step) or, for parameters, from to_backend(). Host
// data crosses with upload()/download(), which are asynchronous: a downloaded buffer is valid after
// synchronize(). Ops run in issue order on one stream.
//
// Precision contract (DESIGN.md decision 13). activation_dtype() is F32 on the CPU (which runs every
// op in f32) and BF16 on CUDA. Per op:
//   - activations and their gradients (x, y, dy, dx, q, k, v, out, ...): activation_dtype();
//   - weights (w, b, gamma, beta, embedding table): the model's working copy, activation_dtype();
//   - parameter gradients (dw, db, dgamma, dbeta, dtable): F32, accumulated (+=);
//   - statistics: norm mean/rstd and attention row log-sum-exp: F32;
//   - timesteps: F32 [B]; token ids: I32 or I64;
//   - the training step's tensors (loss target, per-sample losses, master weights, AdamW moments): F32;
//     the gradient sums of squares: F64.
// Accumulation is f32 or wider everywhere; softmax, norm statistics and losses are computed in f32.
//
// Backward (the training side): gradients of parameters ACCUMULATE (+=) into the caller's gradient
// buffer, which the trainer zeroes once per optimizer step, so gradient-accumulation micro-steps and a
// parameter used twice just add. Gradients of activations (dx, dq, ...) OVERWRITE. A null gradient
// pointer skips that gradient (frozen weight, network input). No two threads add into one element; a
// backend's own loops reduce in a fixed order, so they do not depend on the thread count (the CPU's
// OpenBLAS GEMMs are reproducible only for a fixed OpenBLAS thread count: with large reductions it
// splits them by thread). add_forward / scale_forward need no backward op: da = alpha dy, db = beta dy
// and dx = s dy are scale_forward (or nothing when the factor is 1).
//
// Layouts (decision 1): feature maps NHWC [B, H, W, C]; sequences [B, T, C]; linear weights [N, K]
// (PyTorch's); conv weights [O, kh, kw, I]. All tensors contiguous.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <vector>

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

// One AdamW update (torch.optim.AdamW, decoupled weight decay). Hyper-parameters are doubles because
// torch holds them as Python floats and forms its scalars in double before rounding once to float.
struct AdamWStep {
  double lr = 0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
  int64_t step = 1;  // 1-based count of updates applied so far, this one included (bias correction)
};

// clip_grad_norm_'s coefficient: min(1, max_norm / (total_norm + 1e-6)); 1 when max_norm <= 0. Shared
// by every backend so the coefficient is computed identically everywhere.
inline float clip_coefficient(double total_norm, float max_norm) {
  if (max_norm <= 0.f) return 1.f;
  const double c = double(max_norm) / (total_norm + 1e-6);
  return float(c < 1.0 ? c : 1.0);
}

struct MemoryStats {
  size_t in_use = 0;    // bytes of live tensors from empty()
  size_t peak = 0;      // high-water mark of in_use since the last reset_peak_memory()
  size_t reserved = 0;  // bytes the backend's pool holds (in use + cached for reuse)
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // The dtype of activations and of the models' working weights (see the precision contract above).
  virtual DType activation_dtype() const = 0;

  // ---- memory ----
  // Uninitialised tensor in this backend's memory, from a pool that reuses freed blocks.
  virtual Tensor empty(const Shape& shape, DType dtype = DType::F32) = 0;
  // t = value (float dtypes; value rounded to the dtype).
  virtual void fill(Tensor& t, float value) = 0;
  // dst = src, same shape and dtype, both this backend's.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  // dst (this backend's) = src (`from`'s: another device of a GPU pair, --gpus-per-rank 2), same shape
  // and dtype; ordered after the work issued so far on both backends and before later work on either,
  // without a host wait. The base version serves one backend, or two CPU ones (tests).
  virtual void copy_from(Ops& from, const Tensor& src, Tensor& dst);
  // dst = src converted between float dtypes (F32 <-> BF16 / F16, round to nearest even), same shape.
  virtual void cast(const Tensor& src, Tensor& dst) = 0;
  // dst.nbytes() bytes of host memory (dst's dtype) into dst; asynchronous (the host buffer must stay
  // alive and unchanged until synchronize()).
  virtual void upload(const void* host, Tensor& dst) = 0;
  // src.nbytes() bytes into host memory; asynchronous: valid after synchronize().
  virtual void download(const Tensor& src, void* host) = 0;
  // Waits until every op issued so far has finished.
  virtual void synchronize() = 0;
  virtual MemoryStats memory_stats() const = 0;
  virtual void reset_peak_memory() = 0;
  // Named ranges for profilers (NVTX on CUDA: Nsight Systems shows each UNet block, the text encoder,
  // the VAE, the optimizer). No-ops on the CPU, and nearly free on CUDA when no profiler is attached.
  virtual void range_push(const char* name) {}
  virtual void range_pop() {}

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

  // ---- the training step (pipelines/train_step.h) ----
  // pred [S, ...] (activation dtype), target [S, ...] F32. Per sample s of n = numel / S elements:
  // sample_mse[s] = mean((pred - target)^2) (F32 [S], accumulated in f64 on the CPU, f32 or wider on a
  // GPU) and dpred = float(2 grad_weight[s] / n) * (pred - target) (overwritten; grad_weight[s] is
  // d loss / d sample_mse[s], host doubles known when the step is issued).
  virtual void mse_loss_forward_backward(const Tensor& pred, const Tensor& target,
                                         const std::vector<double>& grad_weight, Tensor& dpred,
                                         Tensor& sample_mse) = 0;
  // out[0] = sum of x^2 over every element of x (F32), accumulated in f64 in a fixed order that does not
  // depend on threads or launch shapes; out is an F64 [1] (e.g. a slice of a larger buffer).
  virtual void sum_of_squares(const Tensor& x, Tensor& out) = 0;
  // coef (F32 [2]): coef[0] = clip_coefficient(sqrt(sum of sumsq), max_norm) (sumsq F64 [n]);
  // coef[1] = 1 when that norm and every element of `check` (F32, e.g. losses summed over ranks) are
  // finite, else 0 (the step is skipped).
  virtual void clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) = 0;
  // AdamW on flat F32 buffers with g = grad * coef[0], in torch's single-tensor operation order; nothing
  // changes when coef[1] == 0. `working` (activation dtype, may be null) receives the updated weights
  // when the model computes with a separate copy of the master weights.
  virtual void adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                          const AdamWStep& p, const Tensor& coef) = 0;
};

// A profiler range for the lifetime of the object: `const OpsRange r(ops, "unet.down_blocks.", i);`.
class OpsRange {
 public:
  OpsRange(Ops& ops, const char* name) : ops_(ops) { ops_.range_push(name); }
  OpsRange(Ops& ops, const char* prefix, size_t index) : ops_(ops) {
    char name[96];
    std::snprintf(name, sizeof name, "%s%zu", prefix, index);
    ops_.range_push(name);
  }
  ~OpsRange() { ops_.range_pop(); }
  OpsRange(const OpsRange&) = delete;
  OpsRange& operator=(const OpsRange&) = delete;

 private:
  Ops& ops_;
};

// A host tensor as a tensor of this backend in `dtype`: the same storage on the CPU when no conversion
// is needed (CPU backend memory is host memory), else a new tensor (upload, then cast when the dtype
// differs; asynchronous like upload, so `host` must stay unchanged until the next synchronize()).
Tensor to_backend(Ops& ops, const Tensor& host, DType dtype);
inline Tensor to_backend(Ops& ops, const Tensor& host) {
  return to_backend(ops, host, host.dtype());
}
// A backend tensor as a host tensor (downloads and synchronises). On the CPU the result shares t's
// storage (backend memory is host memory): treat it as a read-only snapshot.
Tensor to_host(Ops& ops, const Tensor& t);
// The same, converted to `dtype` (a float dtype) on the backend first.
Tensor to_host(Ops& ops, const Tensor& t, DType dtype);

}  // namespace db
