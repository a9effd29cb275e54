// CPU training-step ops: the MSE loss and its gradient, the gradient sum of squares, the clip
// coefficient with the non-finite check, and AdamW, over flat f32 buffers.
#include <algorithm>
#include <cmath>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

// pred, target, dpred [S, ...] -> sample_mse [S]; the per-sample sum in double (reported), the
// gradient scale k rounded once from double, as in the reference step before this was an op.
void CpuOps::mse_loss_forward_backward(const Tensor& pred, const Tensor& target,
                                       const std::vector<double>& grad_weight, Tensor& dpred,
                                       Tensor& sample_mse) {
  const int64_t S = pred.dim(0);
  DB_CHECK(target.shape() == pred.shape() && dpred.shape() == pred.shape(), "mse: pred ", pred.desc(),
           ", target ", target.desc(), ", dpred ", dpred.desc(), " differ");
  DB_CHECK(int64_t(grad_weight.size()) == S && sample_mse.numel() == S, "mse: ", grad_weight.size(),
           " weights and ", sample_mse.desc(), " for ", S, " samples");
  const int64_t n = S ? pred.numel() / S : 0;
  const float *p = pred.f32(), *t = target.f32();
  float *dp = dpred.f32(), *out = sample_mse.f32();
  for (int64_t s = 0; s < S; ++s) {
    const float k = float(2.0 * grad_weight[size_t(s)] / double(n));
    double acc = 0;
    for (int64_t i = s * n; i < (s + 1) * n; ++i) {
      const float d = p[i] - t[i];
      acc += double(d) * d;
      dp[i] = k * d;
    }
    out[s] = float(acc / double(n));
  }
}

void CpuOps::sum_of_squares(const Tensor& x, Tensor& out) {
  DB_CHECK(out.dtype() == DType::F64 && out.numel() == 1, "sum_of_squares: output ", out.desc(),
           ", expected f64[1]");
  // Fixed 64 Ki-element blocks summed in order: the result does not depend on the thread count.
  const float* g = x.f32();
  const int64_t n = x.numel(), kBlock = 1 << 16, nb = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(size_t(std::max<int64_t>(nb, 1)), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < nb; ++b) {
    double s = 0;
    for (int64_t i = b * kBlock, e = std::min(n, (b + 1) * kBlock); i < e; ++i) s += double(g[i]) * g[i];
    partial[size_t(b)] = s;
  }
  double total = 0;
  for (double p : partial) total += p;
  out.data<double>()[0] = total;
}

void CpuOps::clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) {
  DB_CHECK(sumsq.dtype() == DType::F64 && coef.numel() == 2, "clip_and_check: ", sumsq.desc(), " -> ",
           coef.desc());
  double ss = 0;
  for (int64_t i = 0; i < sumsq.numel(); ++i) ss += sumsq.data<double>()[i];
  const double norm = std::sqrt(ss);
  bool finite = std::isfinite(norm);
  for (int64_t i = 0; i < check.numel(); ++i) finite = finite && std::isfinite(check.f32()[i]);
  coef.f32()[0] = clip_coefficient(norm, max_norm);
  coef.f32()[1] = finite ? 1.f : 0.f;
}

void CpuOps::adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                        const AdamWStep& c, const Tensor& coef) {
  const int64_t n = master.numel();
  DB_CHECK(grad.numel() == n && m.numel() == n && v.numel() == n, "adamw: buffers ", master.desc(), ", ",
           grad.desc(), ", ", m.desc(), ", ", v.desc(), " differ");
  DB_CHECK(!working || working->raw() == master.raw(),
           "adamw: the CPU backend computes with the f32 master weights (no separate working copy)");
  if (coef.f32()[1] == 0.f) return;  // non-finite step: skipped
  const float scale = coef.f32()[0];
  // torch forms these scalars in Python (double) and rounds them once to float.
  const float decay = float(1.0 - c.lr * c.weight_decay);
  const float w1 = float(1.0 - c.beta1), w2 = float(1.0 - c.beta2);
  const float beta2 = float(c.beta2), eps = float(c.eps);
  // torch computes the bias corrections in Python floats (double), then uses them as scalars.
  const double bc1 = 1.0 - std::pow(c.beta1, double(c.step));
  const double bc2 = 1.0 - std::pow(c.beta2, double(c.step));
  const float step_size = float(c.lr / bc1);
  const float bc2_sqrt = float(std::sqrt(bc2));
  float *param = master.f32(), *mp = m.f32(), *vp = v.f32();
  const float* gp = grad.f32();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = gp[i] * scale;  // clip_grad_norm_ scales the gradient in place first
    float p = param[i] * decay;
    // torch.lerp(m, g, w): weight < 0.5 uses m + w * (g - m)
    const float mi = w1 < 0.5f ? mp[i] + w1 * (g - mp[i]) : g - (g - mp[i]) * (1.f - w1);
    const float vi = vp[i] * beta2 + w2 * g * g;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p = p - step_size * (mi / denom);
    mp[i] = mi;
    vp[i] = vi;
    param[i] = p;
  }
}

}  // namespace db
