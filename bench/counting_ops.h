#pragma once
// CountingOps: an Ops that counts the floating-point work of the matrix-product ops it is asked to run
// (linear, conv2d, attention; forward and backward), from their shapes, and either forwards every call
// to a real backend or, with no backend, runs nothing at all (shapes only: tensors are placeholders
// without memory, so a full sd15 step is counted on any machine in a fraction of a second).
//
// Conventions (the usual "model FLOPs": a multiply-add is 2 FLOPs; elementwise ops, norms and softmax
// are not counted, they are < 1% of SD's total):
//   linear  y[M,N] = x[M,K] w[N,K]^T          forward 2MNK; backward 2MNK for dx, 2MNK for dw
//   conv2d  y[B,Ho,Wo,O], w[O,kh,kw,C]       forward 2 B Ho Wo O kh kw C; the same for dx and for dw
//   attention per head: S = Q K^T, O = P V    forward 4 B H Tq Tk D (the causal half is not discounted);
//           backward 8 B H Tq Tk D (dV, dP, dQ, dK). FlashAttention's recomputation of S in backward
//           (2 B H Tq Tk D) is hardware work, not model work: counted separately as `recompute`.
#include <cstdint>
#include <cstring>

#include "dreambooth/backend/ops.h"

namespace db::bench {

struct FlopCount {
  double linear = 0, conv = 0, attention = 0, recompute = 0;
  double model() const { return linear + conv + attention; }
};

class CountingOps final : public Ops {
 public:
  explicit CountingOps(Ops* inner, DType act = DType::BF16) : inner_(inner), act_(act) {}
  FlopCount flops;

  Device device() const override { return inner_ ? inner_->device() : Device::CUDA; }
  const char* name() const override { return inner_ ? inner_->name() : "count-only"; }
  DType activation_dtype() const override { return inner_ ? inner_->activation_dtype() : act_; }

  Tensor empty(const Shape& shape, DType dtype = DType::F32) override {
    if (inner_) return inner_->empty(shape, dtype);
    // A placeholder: a device tensor nobody dereferences (only backends touch elements, and this
    // backend touches none).
    static char dummy[64];
    return Tensor::wrap(dummy, shape, dtype, Device::CUDA);
  }
  void fill(Tensor& t, float v) override {
    run([&](Ops& o) { o.fill(t, v); });
  }
  void copy(const Tensor& s, Tensor& d) override {
    run([&](Ops& o) { o.copy(s, d); });
  }
  void cast(const Tensor& s, Tensor& d) override {
    run([&](Ops& o) { o.cast(s, d); });
  }
  void upload(const void* h, Tensor& d) override {
    run([&](Ops& o) { o.upload(h, d); });
  }
  void download(const Tensor& s, void* h) override {
    if (inner_) return inner_->download(s, h);
    std::memset(h, 0, s.nbytes());  // zeros: finite losses and norms for the host's bookkeeping
  }
  void synchronize() override {
    run([&](Ops& o) { o.synchronize(); });
  }
  MemoryStats memory_stats() const override { return inner_ ? inner_->memory_stats() : MemoryStats{}; }
  void reset_peak_memory() override {
    run([&](Ops& o) { o.reset_peak_memory(); });
  }
  void range_push(const char* n) override {
    run([&](Ops& o) { o.range_push(n); });
  }
  void range_pop() override {
    run([&](Ops& o) { o.range_pop(); });
  }

  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override {
    flops.linear += 2.0 * double(y.numel()) * double(w.numel() / w.dim(0));
    run([&](Ops& o) { o.linear_forward(x, w, b, y); });
  }
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                       Tensor* db) override {
    const double mnk = double(dy.numel()) * double(w.numel() / w.dim(0));
    flops.linear += 2.0 * mnk * ((dx ? 1 : 0) + (dw ? 1 : 0));
    run([&](Ops& o) { o.linear_backward(dy, x, w, dx, dw, db); });
  }
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                      const Conv2dGeometry& g) override {
    flops.conv += 2.0 * double(y.numel()) * double(w.numel() / w.dim(0));
    run([&](Ops& o) { o.conv2d_forward(x, w, b, y, g); });
  }
  void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw, Tensor* db,
                       const Conv2dGeometry& g) override {
    flops.conv += 2.0 * double(dy.numel()) * double(w.numel() / w.dim(0)) * ((dx ? 1 : 0) + (dw ? 1 : 0));
    run([&](Ops& o) { o.conv2d_backward(dy, x, w, dx, dw, db, g); });
  }
  void group_norm_forward(const Tensor& x, const Tensor& gm, const Tensor& bt, Tensor& y, int groups,
                          float eps, Activation act, Tensor* mean, Tensor* rstd) override {
    run([&](Ops& o) { o.group_norm_forward(x, gm, bt, y, groups, eps, act, mean, rstd); });
  }
  void group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gm, const Tensor& bt,
                           const Tensor& mean, const Tensor& rstd, int groups, Activation act, Tensor* dx,
                           Tensor* dgamma, Tensor* dbeta) override {
    run([&](Ops& o) { o.group_norm_backward(dy, x, gm, bt, mean, rstd, groups, act, dx, dgamma, dbeta); });
  }
  void layer_norm_forward(const Tensor& x, const Tensor& gm, const Tensor& bt, Tensor& y, float eps,
                          Tensor* mean, Tensor* rstd) override {
    run([&](Ops& o) { o.layer_norm_forward(x, gm, bt, y, eps, mean, rstd); });
  }
  void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gm, const Tensor& mean,
                           const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override {
    run([&](Ops& o) { o.layer_norm_backward(dy, x, gm, mean, rstd, dx, dgamma, dbeta); });
  }
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                         const AttentionParams& p, Tensor* lse) override {
    flops.attention += 4.0 * attention_mnk(q, k);
    run([&](Ops& o) { o.attention_forward(q, k, v, out, p, lse); });
  }
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                          Tensor& dk, Tensor& dv) override {
    flops.attention += 8.0 * attention_mnk(q, k);
    flops.recompute += 2.0 * attention_mnk(q, k);
    run([&](Ops& o) { o.attention_backward(dout, q, k, v, out, lse, p, dq, dk, dv); });
  }
  void activation_forward(const Tensor& x, Tensor& y, Activation a) override {
    run([&](Ops& o) { o.activation_forward(x, y, a); });
  }
  void activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation a) override {
    run([&](Ops& o) { o.activation_backward(x, dy, dx, a); });
  }
  void geglu_forward(const Tensor& x, Tensor& y) override {
    run([&](Ops& o) { o.geglu_forward(x, y); });
  }
  void geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) override {
    run([&](Ops& o) { o.geglu_backward(x, dy, dx); });
  }
  void add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha, float beta) override {
    run([&](Ops& o) { o.add_forward(a, b, y, alpha, beta); });
  }
  void add_broadcast_forward(Tensor& x, const Tensor& v) override {
    run([&](Ops& o) { o.add_broadcast_forward(x, v); });
  }
  void add_broadcast_backward(const Tensor& dy, Tensor& dv) override {
    run([&](Ops& o) { o.add_broadcast_backward(dy, dv); });
  }
  void scale_forward(const Tensor& x, Tensor& y, float s) override {
    run([&](Ops& o) { o.scale_forward(x, y, s); });
  }
  void concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) override {
    run([&](Ops& o) { o.concat_channels_forward(a, b, y); });
  }
  void concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) override {
    run([&](Ops& o) { o.concat_channels_backward(dy, da, db); });
  }
  void upsample_nearest2x_forward(const Tensor& x, Tensor& y) override {
    run([&](Ops& o) { o.upsample_nearest2x_forward(x, y); });
  }
  void upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) override {
    run([&](Ops& o) { o.upsample_nearest2x_backward(dy, dx); });
  }
  void timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) override {
    run([&](Ops& o) { o.timestep_embedding_forward(t, y, p); });
  }
  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) override {
    run([&](Ops& o) { o.embedding_forward(ids, table, y); });
  }
  void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) override {
    run([&](Ops& o) { o.embedding_backward(ids, dy, dtable); });
  }
  void mse_loss_forward_backward(const Tensor& pred, const Tensor& target, const std::vector<double>& w,
                                 Tensor& dpred, Tensor& sample_mse) override {
    run([&](Ops& o) { o.mse_loss_forward_backward(pred, target, w, dpred, sample_mse); });
  }
  void sum_of_squares(const Tensor& x, Tensor& out) override {
    run([&](Ops& o) { o.sum_of_squares(x, out); });
  }
  void clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) override {
    run([&](Ops& o) { o.clip_and_check(sumsq, check, max_norm, coef); });
  }
  void adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                  const AdamWStep& p, const Tensor& coef) override {
    run([&](Ops& o) { o.adamw_step(master, grad, m, v, working, p, coef); });
  }

 private:
  // B * H * Tq * Tk * D from q [B, Tq, H*D] and k [B, Tk, H*D].
  static double attention_mnk(const Tensor& q, const Tensor& k) {
    return double(q.dim(0)) * double(q.dim(1)) * double(k.dim(1)) * double(q.dim(2));
  }
  template <class F>
  void run(F&& f) {
    if (inner_) f(*inner_);
  }
  Ops* inner_;
  DType act_;
};

}  // namespace db::bench
