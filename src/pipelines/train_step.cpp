#include "dreambooth/pipelines/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/gradient_reducer.h"
#include "dreambooth/io/model_folder.h"

namespace db {
namespace {
Tensor flat(const Tensor& t) {
  return t.view({t.numel()});
}

// t (on `from`) as a tensor of `to`: itself on one backend, else a copy to the pair's other device.
Tensor on(Ops& to, Ops& from, const Tensor& t) {
  if (&to == &from) return t;
  Tensor out = to.empty(t.shape(), t.dtype());
  to.copy_from(from, t, out);
  return out;
}
}  // namespace

ModelBuffers ModelBuffers::create(Ops& ops, ParamRegistry reg, const Tensor& host_params, bool trained,
                                  const ShardLayout* layout, int rank) {
  DB_CHECK(host_params.numel() == reg.total_numel() && host_params.dtype() == DType::F32, "parameter buffer ",
           host_params.desc(), " does not match the registry (", reg.total_numel(), " f32 elements)");
  ModelBuffers b;
  b.reg = std::move(reg);
  b.own_end = b.reg.total_numel();
  b.master = to_backend(ops, host_params, DType::F32);
  b.working = b.master;
  b.refresh_working(ops);
  if (trained) {
    const Shape s{b.reg.total_numel()};
    b.grad = ops.empty(s, DType::F32);
    ops.fill(b.grad, 0.f);
    if (layout) {  // the owned range's moments only: the whole ones never exist on this rank
      b.shard_optimizer(ops, *layout, rank);
    } else {
      for (Tensor* t : {&b.m, &b.v}) {
        *t = ops.empty(s, DType::F32);
        ops.fill(*t, 0.f);
      }
    }
  }
  return b;
}

void ModelBuffers::refresh_working(Ops& ops) {
  DB_CHECK(!master_sharded, "refresh_working: the master is sharded (load_master sets both)");
  if (ops.activation_dtype() == DType::F32) {
    working = master;
    return;
  }
  if (!working.defined() || working.dtype() != ops.activation_dtype())
    working = ops.empty(master.shape(), ops.activation_dtype());
  ops.cast(master, working);
}

void ModelBuffers::shard_optimizer(Ops& ops, const ShardLayout& layout, int rank) {
  DB_CHECK(trained() && layout.numel() == reg.total_numel() && rank >= 0 && rank < layout.ranks(),
           "shard_optimizer: layout of ", layout.numel(), " elements, rank ", rank, " for ",
           reg.total_numel());
  shard = layout;
  own_begin = layout.begin(rank);
  own_end = layout.end(rank);
  for (Tensor* t : {&m, &v}) {
    *t = ops.empty({own_end - own_begin}, DType::F32);
    ops.fill(*t, 0.f);
  }
  master_sharded = working.raw() != master.raw();
  if (master_sharded) {
    Tensor own = ops.empty({own_end - own_begin}, DType::F32);
    if (own.numel() > 0) ops.copy(flat(master).slice(own_begin, own_end), own);
    master = own;  // the whole master is freed
  }
}

void ModelBuffers::load_master(Ops& ops, const Tensor& host) {
  DB_CHECK(host.dtype() == DType::F32 && host.numel() == reg.total_numel(), "load_master: ", host.desc(),
           " for ", reg.total_numel(), " parameters");
  if (!master_sharded) {
    ops.upload(host.raw(), master);
    ops.synchronize();
    refresh_working(ops);
    return;
  }
  const Tensor whole = to_backend(ops, flat(host), DType::F32);  // transient: one whole f32 copy
  ops.cast(whole, working);
  if (master.numel() > 0) ops.copy(whole.slice(own_begin, own_end), master);
  ops.synchronize();
}

Tensor ModelBuffers::full_master_host(Ops& ops, Communicator* comm) const {
  return master_sharded ? full_moment_host(ops, comm, master) : to_host(ops, master);
}

Tensor ModelBuffers::full_moment_host(Ops& ops, Communicator* comm, const Tensor& part) const {
  if (!sharded()) return to_host(ops, part);
  DB_CHECK(comm && comm->size() == shard.ranks(),
           "full_moment_host: the communicator does not match the shard");
  Tensor full = Tensor::empty({reg.total_numel()});
  if (part.numel() > 0) {
    ops.download(part, full.f32() + own_begin);
    ops.synchronize();
  }
  comm->all_gather(full, shard.counts());
  return full;
}

int64_t TrainState::sharding_saves_bytes() const {
  int64_t saved = 0;
  for (const ModelBuffers* b : {&unet_buf, &te_buf})
    if (b->sharded()) saved += b->sharding_saves_bytes();
  return saved;
}

void TrainState::bind() {
  const AdapterSet ua{&unet_lora.reg, unet_lora.working, unet_lora.grad, lora.rank ? lora.scale() : 1.f};
  const AdapterSet ta{&te_lora.reg, te_lora.working, te_lora.grad, lora.rank ? lora.scale() : 1.f};
  unet = std::make_unique<UNet2DConditionModel>(unet_cfg, unet_buf.reg, unet_buf.working,
                                                unet_lora.master.defined() ? &ua : nullptr);
  unet_grad = unet_buf.trained()
                  ? std::make_unique<UNet2DConditionModel>(unet_cfg, unet_buf.reg, unet_buf.grad)
                  : nullptr;
  te = std::make_unique<ClipTextModel>(te_cfg, te_buf.reg, te_buf.working,
                                       te_lora.master.defined() ? &ta : nullptr);
  te_grad = te_buf.trained() ? std::make_unique<ClipTextModel>(te_cfg, te_buf.reg, te_buf.grad) : nullptr;
}

void TrainState::enable_lora(Ops& ops, const LoraOptions& lo, uint64_t seed) {
  DB_CHECK(lo.rank >= 1, "LoRA: rank must be >= 1 (got ", lo.rank, ")");
  DB_CHECK(lo.alpha >= 0, "LoRA: alpha must be >= 0 (got ", lo.alpha, ")");
  lora = lo;
  for (ModelBuffers* b : {&unet_buf, &te_buf}) b->grad = b->m = b->v = Tensor();
  ParamRegistry ur = build_lora_registry(unet_buf.reg, lora_unet_targets(), lo.rank);
  const Tensor up = init_lora_params(ur, seed, 0);
  unet_lora = ModelBuffers::create(ops, std::move(ur), up, true);
  te_lora = ModelBuffers();
  if (lo.text_encoder) {
    ParamRegistry tr = build_lora_registry(te_buf.reg, lora_text_targets(), lo.rank);
    const Tensor tp = init_lora_params(tr, seed, 1);
    te_lora = ModelBuffers::create(te_ops ? *te_ops : ops, std::move(tr), tp, true);
  }
  bind();
}

std::vector<ModelBuffers*> TrainState::trained_buffers() {
  std::vector<ModelBuffers*> out;
  for (ModelBuffers* b : {&unet_buf, &te_buf, &unet_lora, &te_lora})
    if (b->trained()) out.push_back(b);
  return out;
}

TrainState TrainState::from(Ops& ops, const UNetConfig& uc, const ParamRegistry& ureg, const Tensor& up,
                            const ClipTextConfig& tc, const ParamRegistry& treg, const Tensor& tp,
                            bool train_text_encoder, bool train_unet, Ops* te_ops, int shard_rank,
                            int shard_ranks) {
  TrainState s;
  s.unet_cfg = uc;
  s.te_cfg = tc;
  s.te_ops = te_ops;
  const ShardLayout ul(ureg.total_numel(), shard_ranks), tl(treg.total_numel(), shard_ranks);
  const bool shard = shard_ranks > 1;
  s.unet_buf = ModelBuffers::create(ops, ureg, up, train_unet, shard ? &ul : nullptr, shard_rank);
  s.te_buf = ModelBuffers::create(te_ops ? *te_ops : ops, treg, tp, train_text_encoder, shard ? &tl : nullptr,
                                  shard_rank);
  s.bind();
  return s;
}

TrainState TrainState::load(Ops& ops, const ModelFolder& folder, bool train_text_encoder, bool train_unet,
                            Ops* te_ops, int shard_rank, int shard_ranks) {
  ParamRegistry ureg = folder.registry(Component::UNet), treg = folder.registry(Component::TextEncoder);
  const Tensor up = folder.load(Component::UNet, ureg);
  const Tensor tp = folder.load(Component::TextEncoder, treg);
  return from(ops, folder.unet, ureg, up, folder.text_encoder, treg, tp, train_text_encoder, train_unet,
              te_ops, shard_rank, shard_ranks);
}

void TrainState::zero_grads(Ops& ops) {
  for (ModelBuffers* b : trained_buffers()) ops_for(*b, ops).fill(b->grad, 0.f);
}

void prepare_targets(const NoiseSchedule& sched, MicroBatch& mb) {
  if (mb.noisy.defined() && mb.target.defined()) return;
  mb.noisy = sched.add_noise(mb.latents, mb.noise, mb.timesteps);
  mb.target = sched.target(mb.latents, mb.noise, mb.timesteps);
}

namespace {

// d loss / d sample_mse[s] for the micro-batch's loss (per sample, before the accumulation scale):
// instance samples w_b / B (min-SNR weight, else 1), class samples prior_loss_weight / B.
std::vector<double> loss_weights(const MicroBatch& mb, const NoiseSchedule& sched, const StepOptions& opt) {
  const int B = mb.pairs;
  std::vector<float> w(size_t(B), 1.f);
  if (opt.snr_gamma > 0) {
    std::vector<int> ti(mb.timesteps.begin(), mb.timesteps.begin() + B);
    w = sched.min_snr_weights(ti, opt.snr_gamma);
  }
  std::vector<double> out;
  for (int b = 0; b < B; ++b) out.push_back(double(w[size_t(b)]));
  if (mb.prior)
    for (int b = 0; b < B; ++b) out.push_back(double(opt.prior_loss_weight));
  return out;
}

}  // namespace

LossParts combine_losses(const float* sample_mse, const MicroBatch& mb, const NoiseSchedule& sched,
                         const StepOptions& opt) {
  const std::vector<double> w = loss_weights(mb, sched, opt);
  const int B = mb.pairs;
  LossParts lp;
  for (int b = 0; b < B; ++b) lp.instance += w[size_t(b)] * double(sample_mse[b]) / B;
  if (mb.prior)
    for (int b = B; b < 2 * B; ++b) lp.prior += double(sample_mse[b]) / B;
  lp.loss = lp.instance + double(opt.prior_loss_weight) * lp.prior;
  return lp;
}

TrainStep::TrainStep(Ctx& ctx, TrainState& st, const NoiseSchedule& sched, const StepOptions& opt,
                     Communicator* comm, size_t bucket_bytes, Communicator* te_comm)
    : ctx_(ctx),
      st_(st),
      sched_(sched),
      opt_(opt),
      comm_(comm && comm->size() > 1 ? comm : nullptr),
      te_comm_(st.te_ops ? te_comm : comm_) {
  DB_CHECK(!comm_ || (te_comm_ && te_comm_->size() == comm_->size()), "train step: a GPU pair over ",
           comm_ ? comm_->size() : 1, " ranks needs a communicator for its second devices");
  if (comm_) {
    reducer_ = std::make_unique<GradientReducer>(*comm_, ctx.ops, bucket_bytes);
    // A GPU pair reduces the text encoder's gradients on its second devices, over their own communicator.
    if (st.te_ops) te_reducer_ = std::make_unique<GradientReducer>(*te_comm_, *st.te_ops, bucket_bytes);
    auto shard = [](const ModelBuffers& b) { return b.sharded() ? &b.shard : nullptr; };
    if (st.unet_buf.trained())
      reducer_->attach("unet", st.unet_buf.reg, st.unet_buf.grad, shard(st.unet_buf));
    if (st.te_buf.trained())
      reducer_for("text_encoder")->attach("text_encoder", st.te_buf.reg, st.te_buf.grad, shard(st.te_buf));
    // LoRA: the adapters' gradients are small; finish() reduces them in one go (nothing announced).
    if (st.unet_lora.trained()) reducer_->attach("unet_lora", st.unet_lora.reg, st.unet_lora.grad);
    if (st.te_lora.trained())
      reducer_for("text_encoder")->attach("text_encoder_lora", st.te_lora.reg, st.te_lora.grad);
  }
  for (const ModelBuffers* b : {&st.unet_buf, &st.te_buf})
    DB_CHECK(!b->sharded() || (comm_ && b->shard.ranks() == comm_->size()),
             "train step: the optimizer is sharded over ", b->shard.ranks(), " ranks, the world has ",
             comm ? comm->size() : 1);
}

TrainStep::~TrainStep() = default;

GradientReducer* TrainStep::reducer_for(const std::string& model) const {
  return te_reducer_ && model.starts_with("text_encoder") ? te_reducer_.get() : reducer_.get();
}

Communicator* TrainStep::comm_for(const ModelBuffers& b) const {
  return &st_.ops_for(b, ctx_.ops) == &ctx_.ops ? comm_ : te_comm_;
}

void TrainStep::micro_batch(MicroBatch mb, float grad_scale, bool last) {
  DB_CHECK(!updated_, "train step: micro_batch after update");
  const int64_t S = mb.latents.dim(0);
  const int B = mb.pairs;
  DB_CHECK(S == (mb.prior ? 2 * B : B), "train step: ", S, " samples for ", B, " pairs (prior ",
           mb.prior ? "on" : "off", ")");
  DB_CHECK(mb.noise.shape() == mb.latents.shape(), "train step: noise ", shape_str(mb.noise.shape()),
           " vs latents ", shape_str(mb.latents.shape()));
  DB_CHECK(int64_t(mb.timesteps.size()) == S && mb.ids.dim(0) == S, "train step: batch sizes disagree");
  prepare_targets(sched_, mb);
  Ops& ops = ctx_.ops;
  // A GPU pair: the text encoder runs on the second device, its hidden states are copied to the UNet's
  // and their gradient back.
  Ops& te_ops = st_.te_ops ? *st_.te_ops : ops;
  Ctx te_ctx{te_ops};
  const DType act = ops.activation_dtype();

  Tensor tf = Tensor::empty({S});
  for (int64_t i = 0; i < S; ++i) tf.f32()[i] = float(mb.timesteps[size_t(i)]);
  const Tensor t_dev = to_backend(ops, tf), ids = to_backend(te_ops, mb.ids);
  const Tensor noisy = to_backend(ops, mb.noisy, act), target = to_backend(ops, mb.target, DType::F32);

  const bool train_te = opt_.train_text_encoder && st_.te_trained();
  ClipTextModel::Saved ts;
  ts.gradient_checkpointing = opt_.gradient_checkpointing;
  const Tensor ehs = on(ops, te_ops, st_.te->forward(te_ctx, ids, train_te ? &ts : nullptr));
  UNet2DConditionModel::Saved us;
  us.gradient_checkpointing = opt_.gradient_checkpointing;
  Tensor pred = st_.unet->forward(ctx_, noisy, t_dev, ehs, &us);

  std::vector<double> gw = loss_weights(mb, sched_, opt_);
  for (double& g : gw) g = g * grad_scale / B;
  Tensor dpred = ctx_.alloc(pred.shape());
  Tensor mse = ops.empty({S}, DType::F32);
  ops.mse_loss_forward_backward(pred, target, gw, dpred, mse);
  mse_.push_back(mse);

  // The last micro-batch's backward announces finished blocks to the reducer.
  Ctx bctx{ops}, te_bctx{te_ops};
  auto announce = [&](Ctx& c, const char* model) {
    if (last && reducer_ && !st_.lora_enabled())
      c.grads_ready = [this, model](const std::string& p) { reducer_for(model)->ready(model, p); };
  };
  announce(bctx, "unet");
  if (train_te) {
    Tensor dehs = ctx_.alloc(ehs.shape());
    ops.fill(dehs, 0.f);
    st_.unet->backward(bctx, us, dpred, st_.unet_grad.get(), &dehs);
    announce(te_bctx, "text_encoder");
    st_.te->backward(te_bctx, ts, on(te_ops, ops, dehs), st_.te_grad.get());
  } else {
    st_.unet->backward(bctx, us, dpred, st_.unet_grad.get(), nullptr);
  }
  mbs_.push_back(std::move(mb));
}

void TrainStep::update(int64_t step) {
  DB_CHECK(!mse_.empty() && !updated_, "train step: update needs micro-batches, once");
  Ops& ops = ctx_.ops;
  const OpsRange range(ops, "optimizer");
  if (reducer_) reducer_->finish();  // every rank now holds the averaged gradient
  if (te_reducer_) te_reducer_->finish();

  // Losses of every rank summed: finite exactly when finite on every rank.
  int64_t total = 0;
  for (const Tensor& m : mse_) total += m.numel();
  check_ = ops.empty({total}, DType::F32);
  for (int64_t off = 0; const Tensor& m : mse_) {
    Tensor dst = check_.slice(off, off + m.numel());
    ops.copy(m, dst);
    off += m.numel();
  }
  if (comm_) comm_->allreduce_sum(check_);

  const std::vector<ModelBuffers*> models = st_.trained_buffers();
  sumsq_ = ops.empty({int64_t(std::max<size_t>(models.size(), 1))}, DType::F64);
  ops.fill(sumsq_, 0.f);
  // Sharded buffers contribute the sums of squares of their owned ranges on every rank, summed over the
  // ranks; an unsharded buffer beside them contributes from rank 0 only, so the sum counts it once.
  bool sharded = false;
  for (const ModelBuffers* b : models) sharded = sharded || b->sharded();
  for (size_t i = 0; i < models.size(); ++i) {
    const ModelBuffers& b = *models[i];
    Ops& bo = st_.ops_for(b, ops);
    Tensor out = sumsq_.slice(int64_t(i), int64_t(i) + 1);
    if (sharded && !b.sharded() && comm_->rank() != 0) continue;  // stays 0
    if (b.own_end <= b.own_begin) continue;
    Tensor part = &bo == &ops ? out : bo.empty({1}, DType::F64);  // a pair: the norm is taken on the UNet's
    bo.sum_of_squares(flat(b.grad).slice(b.own_begin, b.own_end), part);
    if (&bo != &ops) ops.copy_from(bo, part, out);
  }
  if (sharded) comm_->allreduce_sum(sumsq_);  // the global norm
  coef_ = ops.empty({2}, DType::F32);
  ops.clip_and_check(sumsq_, check_, opt_.max_grad_norm, coef_);

  lr_ = opt_.lr.lr_at(step);
  AdamWStep p;
  p.lr = lr_;
  p.beta1 = opt_.adam.beta1;
  p.beta2 = opt_.adam.beta2;
  p.eps = opt_.adam.eps;
  p.weight_decay = opt_.adam.weight_decay;
  p.step = st_.adam_step + 1;
  const Tensor te_coef = st_.te_ops ? on(*st_.te_ops, ops, coef_) : coef_;
  for (ModelBuffers* b : models) {
    Ops& bo = st_.ops_for(*b, ops);  // a GPU pair: the text encoder's on the second device
    const Tensor& coef = &bo == &ops ? coef_ : te_coef;
    if (b->sharded()) {
      // The owned range: of the sharded master (whole buffer) or of the whole one; the working copy's
      // owned range is written by AdamW when separate, and the updated weights are all-gathered.
      if (b->own_end > b->own_begin) {
        Tensor master = b->master_sharded ? flat(b->master) : flat(b->master).slice(b->own_begin, b->own_end);
        Tensor working = flat(b->working).slice(b->own_begin, b->own_end);
        bo.adamw_step(master, flat(b->grad).slice(b->own_begin, b->own_end), b->m, b->v,
                      b->master_sharded ? &working : nullptr, p, coef);
      }
      comm_for(*b)->all_gather(b->master_sharded ? b->working : b->master, b->shard.counts());
    } else {
      Tensor* working = b->working.raw() == b->master.raw() ? nullptr : &b->working;
      bo.adamw_step(b->master, b->grad, b->m, b->v, working, p, coef);
    }
  }
  st_.zero_grads(ops);
  updated_ = true;
}

LossParts TrainStep::losses() {
  std::vector<std::vector<float>> mse(mse_.size());
  for (size_t i = 0; i < mse_.size(); ++i) {
    mse[i].resize(size_t(mse_[i].numel()));
    ctx_.ops.download(mse_[i], mse[i].data());
  }
  ctx_.ops.synchronize();
  LossParts sum;
  const double n = double(mbs_.size());
  for (size_t i = 0; i < mbs_.size(); ++i) {
    const LossParts lp = combine_losses(mse[i].data(), mbs_[i], sched_, opt_);
    sum.loss += lp.loss / n;
    sum.instance += lp.instance / n;
    sum.prior += lp.prior / n;
  }
  return sum;
}

StepResult TrainStep::finish() {
  DB_CHECK(updated_, "train step: finish before update");
  std::vector<double> sumsq(size_t(sumsq_.numel()));
  float coef[2];
  ctx_.ops.download(sumsq_, sumsq.data());
  ctx_.ops.download(coef_, coef);
  StepResult r;
  if (st_.te_ops) st_.te_ops->synchronize();  // the text encoder's update, on the pair's second device
  r.loss = losses();                          // synchronises: one wait for everything downloaded
  double total = 0;
  for (const double x : sumsq) total += x;
  r.update.grad_norm = std::sqrt(total);
  r.update.lr = lr_;
  r.update.clip_coef = coef[0];
  r.update.applied = coef[1] != 0.f;
  if (r.update.applied) ++st_.adam_step;
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
