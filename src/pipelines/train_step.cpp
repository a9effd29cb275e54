#include "dreambooth/pipelines/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/optim/grad_clip.h"

namespace db {

void TrainState::bind() {
  unet = std::make_unique<UNet2DConditionModel>(unet_cfg, unet_reg, unet_p);
  unet_grad = std::make_unique<UNet2DConditionModel>(unet_cfg, unet_reg, unet_g);
  te = std::make_unique<ClipTextModel>(te_cfg, te_reg, te_p);
  te_grad = std::make_unique<ClipTextModel>(te_cfg, te_reg, te_g);
}

TrainState TrainState::from(const UNetConfig& uc, const ParamRegistry& ureg, const Tensor& up,
                            const ClipTextConfig& tc, const ParamRegistry& treg, const Tensor& tp) {
  TrainState s;
  s.unet_cfg = uc;
  s.te_cfg = tc;
  s.unet_reg = ureg;
  s.te_reg = treg;
  DB_CHECK(up.numel() == ureg.total_numel() && tp.numel() == treg.total_numel(),
           "TrainState: parameter buffers do not match the registries");
  s.unet_p = up;
  s.te_p = tp;
  const Shape us{ureg.total_numel()}, ts{treg.total_numel()};
  s.unet_g = Tensor::zeros(us);
  s.unet_m = Tensor::zeros(us);
  s.unet_v = Tensor::zeros(us);
  s.te_g = Tensor::zeros(ts);
  s.te_m = Tensor::zeros(ts);
  s.te_v = Tensor::zeros(ts);
  s.bind();
  return s;
}

TrainState TrainState::load(const ModelFolder& folder) {
  ParamRegistry ureg = folder.registry(Component::UNet), treg = folder.registry(Component::TextEncoder);
  Tensor up = folder.load(Component::UNet, ureg);
  Tensor tp = folder.load(Component::TextEncoder, treg);
  return from(folder.unet, ureg, up, folder.text_encoder, treg, tp);
}

void TrainState::zero_grads() {
  unet_g.fill(0.f);
  te_g.fill(0.f);
}

namespace {

// mean((pred - target)^2) over n elements in double (reported), and d/dpred of w * that mean, scaled.
double mse_and_grad(const float* pred, const float* target, int64_t n, double weight, float* dpred) {
  double s = 0;
  const float k = float(2.0 * weight / double(n));
  for (int64_t i = 0; i < n; ++i) {
    const float d = pred[i] - target[i];
    s += double(d) * d;
    dpred[i] = k * d;
  }
  return s / double(n);
}

}  // namespace

LossParts forward_backward(Ctx& ctx, TrainState& st, const NoiseSchedule& sched, const MicroBatch& mb,
                           const StepOptions& opt, float grad_scale) {
  const int64_t S = mb.latents.dim(0);
  const int B = mb.pairs;
  DB_CHECK(S == (mb.prior ? 2 * B : B), "train step: ", S, " samples for ", B, " pairs (prior ",
           mb.prior ? "on" : "off", ")");
  DB_CHECK(mb.noise.shape() == mb.latents.shape(), "train step: noise ", shape_str(mb.noise.shape()),
           " vs latents ", shape_str(mb.latents.shape()));
  DB_CHECK(int64_t(mb.timesteps.size()) == S && mb.ids.dim(0) == S, "train step: batch sizes disagree");

  Tensor noisy = sched.add_noise(mb.latents, mb.noise, mb.timesteps);
  Tensor target = sched.target(mb.latents, mb.noise, mb.timesteps);
  Tensor tf = Tensor::empty({S});
  for (int64_t i = 0; i < S; ++i) tf.f32()[i] = float(mb.timesteps[size_t(i)]);

  ClipTextModel::Saved ts;
  ts.gradient_checkpointing = opt.gradient_checkpointing;
  Tensor ehs = opt.train_text_encoder ? st.te->forward(ctx, mb.ids, ts) : st.te->forward(ctx, mb.ids);
  UNet2DConditionModel::Saved us;
  us.gradient_checkpointing = opt.gradient_checkpointing;
  Tensor pred = st.unet->forward(ctx, noisy, tf, ehs, us);

  // Loss and its gradient, per sample (min-SNR weights apply per instance sample; see the header).
  const int64_t per = pred.numel() / S;
  Tensor dpred = Tensor::empty(pred.shape());
  std::vector<float> w(size_t(B), 1.f);
  if (opt.snr_gamma > 0) {
    std::vector<int> ti(mb.timesteps.begin(), mb.timesteps.begin() + B);
    w = sched.min_snr_weights(ti, opt.snr_gamma);
  }
  LossParts lp;
  for (int b = 0; b < B; ++b) {
    const double l = mse_and_grad(pred.f32() + b * per, target.f32() + b * per, per,
                                  double(w[size_t(b)]) * grad_scale / B, dpred.f32() + b * per);
    lp.instance += double(w[size_t(b)]) * l / B;
  }
  if (mb.prior)
    for (int b = B; b < 2 * B; ++b) {
      const double l = mse_and_grad(pred.f32() + b * per, target.f32() + b * per, per,
                                    double(opt.prior_loss_weight) * grad_scale / B, dpred.f32() + b * per);
      lp.prior += l / B;
    }
  lp.loss = lp.instance + double(opt.prior_loss_weight) * lp.prior;

  if (opt.train_text_encoder) {
    Tensor dehs = Tensor::zeros(ehs.shape());
    st.unet->backward(ctx, us, dpred, st.unet_grad.get(), &dehs);
    st.te->backward(ctx, ts, dehs, st.te_grad.get());
  } else {
    st.unet->backward(ctx, us, dpred, st.unet_grad.get(), nullptr);
  }
  return lp;
}

UpdateResult apply_update(TrainState& st, const StepOptions& opt, int64_t step, bool loss_finite) {
  UpdateResult r;
  r.lr = opt.lr.lr_at(step);
  const World& w = world();
  float* ug = st.unet_g.f32();
  float* tg = st.te_g.f32();
  const int64_t un = st.unet_g.numel(), tn = st.te_g.numel();
  if (w.size > 1) {  // data parallel: every rank ends with the same averaged gradient
    allreduce_sum(ug, size_t(un));
    if (opt.train_text_encoder) allreduce_sum(tg, size_t(tn));
    const float inv = 1.f / float(w.size);
    scale_in_place(ug, un, inv);
    if (opt.train_text_encoder) scale_in_place(tg, tn, inv);
  }
  double ss = sum_of_squares(ug, un);
  if (opt.train_text_encoder) ss += sum_of_squares(tg, tn);
  r.grad_norm = std::sqrt(ss);
  const bool finite = !any_rank(!loss_finite) && std::isfinite(r.grad_norm);
  if (finite) {
    if (opt.max_grad_norm > 0) {
      r.clip_coef = clip_coefficient(r.grad_norm, opt.max_grad_norm);
      if (r.clip_coef < 1.f) {
        scale_in_place(ug, un, r.clip_coef);
        if (opt.train_text_encoder) scale_in_place(tg, tn, r.clip_coef);
      }
    }
    ++st.adam_step;
    adamw_step(st.unet_p.f32(), ug, st.unet_m.f32(), st.unet_v.f32(), un, opt.adam, r.lr, st.adam_step);
    if (opt.train_text_encoder)
      adamw_step(st.te_p.f32(), tg, st.te_m.f32(), st.te_v.f32(), tn, opt.adam, r.lr, st.adam_step);
    r.applied = true;
  }
  st.zero_grads();
  return r;
}

Tensor latents_from_moments(const Tensor& mean, const Tensor& logvar, const Tensor& eps,
                            float scaling_factor) {
  DB_CHECK(mean.shape() == logvar.shape() && mean.shape() == eps.shape(), "latents: moments ",
           shape_str(mean.shape()), " / ", shape_str(logvar.shape()), " vs eps ", shape_str(eps.shape()));
  Tensor out = Tensor::empty(mean.shape());
  const float *m = mean.f32(), *lv = logvar.f32(), *e = eps.f32();
  float* o = out.f32();
  for (int64_t i = 0; i < out.numel(); ++i) {
    const float std = std::exp(0.5f * std::clamp(lv[i], -30.f, 20.f));
    o[i] = (m[i] + std * e[i]) * scaling_factor;
  }
  return out;
}

Tensor draw_latent_eps(uint64_t seed, uint32_t step, const std::vector<int64_t>& slots, const Shape& shape) {
  DB_CHECK(!shape.empty() && shape[0] == int64_t(slots.size()), "draw_latent_eps: ", slots.size(),
           " slots for shape ", shape_str(shape));
  Tensor out = Tensor::empty(shape);
  const int64_t per = out.numel() / std::max<int64_t>(1, shape[0]);
  for (size_t b = 0; b < slots.size(); ++b)
    PhiloxStream(seed, RngPurpose::LatentSample, step, uint32_t(slots[b]))
        .normals(out.f32() + int64_t(b) * per, uint64_t(per));
  return out;
}

void split_moments(const Tensor& moments, Tensor* mean, Tensor* logvar) {
  const int64_t C2 = moments.dim(-1), C = C2 / 2, rows = moments.numel() / C2;
  Shape s = moments.shape();
  s.back() = C;
  *mean = Tensor::empty(s);
  *logvar = Tensor::empty(s);
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(mean->f32() + r * C, moments.f32() + r * C2, size_t(C) * 4);
    std::memcpy(logvar->f32() + r * C, moments.f32() + r * C2 + C, size_t(C) * 4);
  }
}

}  // namespace db
