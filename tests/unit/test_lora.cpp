// Lora.*: LoRA adapters (nn/lora.h, nn/linear.h) and LoRA DreamBooth steps (TrainState::enable_lora).
//
// Lora.GoldenStepsMatchPeft: tests/reference/make_lora_golden.py (diffusers + PEFT on sd1-tiny, rank 4,
// alpha 8, UNet and text-encoder adapters, seeded non-zero A and B so that both gradients are non-zero;
// the train.safetensors batch with prior preservation; 3 AdamW steps). Bounds as test_train.cpp explains
// them for full fine-tuning: losses, gradient norm and each adapter gradient within 1e-4 relative; the
// 3-step UPDATE (p3 - p0) within kUpdateTensor = 3e-3 of its norm per tensor and kUpdateAll = 5e-4 over
// all tensors.
//
// Tolerances: everything here is f32 on the CPU backend. An adapter forward y = W x + s B (A x) and the
// same Linear over the merged weight W + s B A differ only by summation order (K + R terms vs K terms of a
// merged product), measured ~1e-7 relative L2; 1e-5 is the f32 bound used for ops elsewhere. The adapter
// gradients are checked against the explicit formulas dB = s dy^T (A x), dA = s B^T dy^T x, dx = dy (W +
// s B A), summed in double on the host: same 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/nn/linear.h"
#include "dreambooth/nn/lora.h"
#include "dreambooth/pipelines/export.h"
#include "dreambooth/pipelines/generate.h"
#include "dreambooth/pipelines/lora_file.h"
#include "dreambooth/pipelines/train.h"
#include "dreambooth/pipelines/train_step.h"
#include "test_helpers.h"
#include "train_harness.h"
#include "train_test_data.h"

using db::test::one_step;

using namespace db;
using db::test::Golden;
using db::test::golden_path;
using db::test::nchw_to_nhwc;

namespace {

constexpr double kF32 = 1e-5;  // see the file comment
constexpr double kGolden = 1e-4, kUpdateTensor = 3e-3, kUpdateAll = 5e-4;

Tensor randn(const Shape& s, uint32_t stream, float scale = 1.f) {
  Tensor t = Tensor::empty(s);
  PhiloxStream(11, RngPurpose::Init, stream, 0).normals(t.f32(), uint64_t(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] *= scale;
  return t;
}

// y[M, N] = x[M, K] w[N, K]^T in double.
Tensor matmul_nt(const Tensor& x, const Tensor& w) {
  const int64_t M = x.dim(0), K = x.dim(1), N = w.dim(0);
  Tensor y = Tensor::empty({M, N});
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(x.f32()[m * K + k]) * w.f32()[n * K + k];
      y.f32()[m * N + n] = float(acc);
    }
  return y;
}

Tensor transpose(const Tensor& a) {
  const int64_t R = a.dim(0), C = a.dim(1);
  Tensor t = Tensor::empty({C, R});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) t.f32()[c * R + r] = a.f32()[r * C + c];
  return t;
}

struct GoldenBatch {
  std::unique_ptr<ModelFolder> mf;
  MicroBatch mb;
};
GoldenBatch golden_batch() {
  GoldenBatch g;
  g.mf = std::make_unique<ModelFolder>(ModelFolder::open(golden_path("sd1-tiny/model")));
  g.mb = db::test::harness_batch(Golden("sd1-tiny/train.safetensors"));
  return g;
}

}  // namespace

TEST(Lora, RegistryNamesAndInit) {
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny/model"));
  const ParamRegistry ureg = mf.registry(Component::UNet), treg = mf.registry(Component::TextEncoder);
  const ParamRegistry lu = build_lora_registry(ureg, lora_unet_targets(), 4);
  const ParamRegistry lt = build_lora_registry(treg, lora_text_targets(), 4);
  const ParamInfo& q = ureg.at("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight");
  const ParamInfo& a = lu.at("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight");
  const ParamInfo& b = lu.at("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_B.weight");
  EXPECT_EQ(a.torch_shape, (Shape{4, q.torch_shape[1]}));
  EXPECT_EQ(b.torch_shape[1], 4);
  EXPECT_NE(lt.find("text_model.encoder.layers.0.self_attn.out_proj.lora_A.weight"), nullptr);
  // 4 projections x 2 attentions per transformer block, 2 tensors each; nothing else (no ff, no proj_in).
  int attn = 0;
  for (const ParamInfo& p : ureg.params())
    if (p.name.ends_with(".attn1.to_q.weight") || p.name.ends_with(".attn2.to_q.weight")) ++attn;
  EXPECT_EQ(lu.params().size(), size_t(attn) * 4 * 2);
  EXPECT_EQ(lt.params().size(), size_t(mf.text_encoder.num_hidden_layers) * 4 * 2);

  // PEFT: A ~ U(-1/sqrt(K), 1/sqrt(K)) (kaiming_uniform a=sqrt(5)), B = 0; deterministic.
  const Tensor p = init_lora_params(lu, 3, 0), p2 = init_lora_params(lu, 3, 0),
               p3 = init_lora_params(lu, 4, 0);
  EXPECT_EQ(std::memcmp(p.raw(), p2.raw(), p.nbytes()), 0);
  EXPECT_NE(std::memcmp(p.raw(), p3.raw(), p.nbytes()), 0);
  const double bound = 1.0 / std::sqrt(double(a.torch_shape[1]));
  double mx = 0, sumsq = 0;
  for (int64_t i = 0; i < a.numel; ++i) {
    mx = std::max(mx, std::abs(double(p.f32()[a.offset + i])));
    sumsq += double(p.f32()[a.offset + i]) * p.f32()[a.offset + i];
  }
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.8 * bound);
  EXPECT_NEAR(std::sqrt(sumsq / double(a.numel)), bound / std::sqrt(3.0), 0.15 * bound);  // U's std
  for (int64_t i = 0; i < b.numel; ++i) ASSERT_EQ(p.f32()[b.offset + i], 0.f);
}

// One adapted Linear against the merged weight and the explicit gradient formulas.
TEST(Lora, LinearForwardBackward) {
  CpuOps ops;
  Ctx ctx{ops};
  const int64_t M = 6, K = 40, N = 24, R = 4;
  const float s = 0.5f;  // alpha 2, rank 4
  ParamRegistry reg, lreg;
  reg.add("to_q.weight", {N, K});
  reg.add("to_q.bias", {N});
  lreg.add("to_q.lora_A.weight", {R, K});
  lreg.add("to_q.lora_B.weight", {N, R});
  Tensor base = randn({reg.total_numel()}, 1, 0.2f), lp = randn({lreg.total_numel()}, 2, 0.3f);
  Tensor lg = Tensor::zeros({lreg.total_numel()});
  const AdapterSet as{&lreg, lp, lg, s};
  const Linear lin(ParamSet(reg, base, "to_q.", &as));
  ASSERT_TRUE(lin.lora.defined());

  Tensor merged = base.clone();
  EXPECT_EQ(merge_lora(reg, merged, lreg, lp, s), 1);
  const Linear ref(ParamSet(reg, merged, "to_q."));
  EXPECT_FALSE(ref.lora.defined());

  const Tensor x = randn({M, K}, 3), dy = randn({M, N}, 4);
  Linear::Saved sv, rsv;
  const Tensor y = lin.forward(ctx, x, &sv), yr = ref.forward(ctx, x, &rsv);
  db::test::expect_close("y vs merged", y, yr, kF32);
  const Tensor dx = lin.backward(ctx, sv, dy, nullptr), dxr = ref.backward(ctx, rsv, dy, nullptr);
  db::test::expect_close("dx vs merged", dx, dxr, kF32);

  const Tensor A = lreg.view(lp, "to_q.lora_A.weight").clone(),
               B = lreg.view(lp, "to_q.lora_B.weight").clone();
  Tensor h = matmul_nt(x, A);                                                   // [M, R]
  Tensor dB = matmul_nt(transpose(dy), transpose(h));                           // [N, R] = dy^T h
  Tensor dA = matmul_nt(transpose(matmul_nt(dy, transpose(B))), transpose(x));  // [R, K] = (dy B)^T x
  for (Tensor* t : {&dA, &dB})
    for (int64_t i = 0; i < t->numel(); ++i) t->f32()[i] *= s;
  db::test::expect_close("dB", lreg.view(lg, "to_q.lora_B.weight").clone(), dB, kF32);
  db::test::expect_close("dA", lreg.view(lg, "to_q.lora_A.weight").clone(), dA, kF32);

  // need_dx = false still trains the adapter (cross-attention k/v without a context gradient).
  Tensor lg2 = Tensor::zeros({lreg.total_numel()});
  const AdapterSet as2{&lreg, lp, lg2, s};
  const Linear lin2(ParamSet(reg, base, "to_q.", &as2));
  Linear::Saved sv2;
  lin2.forward(ctx, x, &sv2);
  EXPECT_FALSE(lin2.backward(ctx, sv2, dy, nullptr, false).defined());
  EXPECT_EQ(std::memcmp(lg.raw(), lg2.raw(), lg.nbytes()), 0);
}

// A whole UNet with (non-zero) adapters computes what the UNet over merge_lora's weights computes.
TEST(Lora, UNetAdaptersEqualMergedWeights) {
  CpuOps ops;
  Ctx ctx{ops};
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny/model"));
  const ParamRegistry reg = mf.registry(Component::UNet);
  const Tensor up = mf.load(Component::UNet, reg);
  const ParamRegistry lreg = build_lora_registry(reg, lora_unet_targets(), 2);
  const Tensor lp = randn({lreg.total_numel()}, 5, 0.2f);
  const AdapterSet as{&lreg, lp, Tensor(), 1.5f};
  const UNet2DConditionModel adapted(mf.unet, reg, up, &as);
  Tensor merged = up.clone();
  EXPECT_EQ(merge_lora(reg, merged, lreg, lp, 1.5f), int(lreg.params().size() / 2));
  const UNet2DConditionModel ref(mf.unet, reg, merged);
  const int64_t S = mf.unet.sample_size;
  const Tensor x = randn({1, S, S, mf.unet.in_channels}, 6);
  const Tensor ehs = randn({1, 8, mf.unet.cross_attention_dim}, 7);
  Tensor t = Tensor::empty({1});
  t.f32()[0] = 500.f;
  const Tensor y = adapted.forward(ctx, x, t, ehs), yr = ref.forward(ctx, x, t, ehs);
  const Tensor yb = UNet2DConditionModel(mf.unet, reg, up).forward(ctx, x, t, ehs);
  db::test::expect_close("unet with adapters vs merged", y, yr, kF32);
  EXPECT_GT(db::test::diff(y, yb).rel_l2, 1e-3) << "the adapters change the output";
}

// LoRA DreamBooth steps on the sd1-tiny golden batch: the base weights are frozen (no gradient or moment
// buffers, bits unchanged), B = 0 makes the first step's losses those of the base model (the golden's),
// and the first step's A gradients are exactly 0 (d A = B^T ...), as in PEFT.
TEST(Lora, DreamBoothStepsTrainAdaptersOnly) {
  CpuOps ops;
  Ctx ctx{ops};
  const GoldenBatch g = golden_batch();
  const Golden tr("sd1-tiny/train.safetensors");
  TrainState st = TrainState::load(ops, *g.mf, true);
  LoraOptions lo;
  lo.rank = 4;
  lo.text_encoder = true;
  st.enable_lora(ops, lo, 9);
  EXPECT_FALSE(st.unet_buf.trained());
  EXPECT_FALSE(st.te_buf.trained());
  EXPECT_EQ(st.unet_grad, nullptr);
  EXPECT_EQ(st.te_grad, nullptr);
  ASSERT_TRUE(st.unet_lora.trained() && st.te_lora.trained());
  EXPECT_LT(st.unet_lora.reg.param_count() * 20, st.unet_buf.reg.param_count());

  const NoiseSchedule sched(g.mf->scheduler);
  StepOptions opt;
  opt.lr = make_lr_schedule("constant", 1e-3f, 0, 3);
  const Tensor up0 = st.unet_buf.master.clone(), tp0 = st.te_buf.master.clone();
  const Tensor ul0 = st.unet_lora.master.clone(), tl0 = st.te_lora.master.clone();
  {
    TrainStep ts(ctx, st, sched, opt);
    ts.micro_batch(g.mb);
    const LossParts lp = ts.losses();
    EXPECT_NEAR(lp.loss, tr["train.step_losses"].f32()[0], 1e-4 * lp.loss) << "B = 0: the base model's loss";
    for (const ModelBuffers* b : {&st.unet_lora, &st.te_lora}) {
      double a_sq = 0, b_sq = 0;
      for (const ParamInfo& p : b->reg.params()) {
        const float* gp = b->grad.f32() + p.offset;
        double& acc = p.name.ends_with("lora_A.weight") ? a_sq : b_sq;
        for (int64_t i = 0; i < p.numel; ++i) acc += double(gp[i]) * gp[i];
      }
      EXPECT_EQ(a_sq, 0.0) << "d A = 0 while B = 0";
      EXPECT_GT(b_sq, 0.0);
    }
    ts.update(0);
    EXPECT_TRUE(ts.finish().update.applied);
  }
  for (int step = 1; step < 3; ++step) {
    const StepResult sr = one_step(ctx, st, sched, g.mb, opt, step);
    EXPECT_TRUE(sr.update.applied);
    EXPECT_GT(sr.update.grad_norm, 0);
  }
  EXPECT_EQ(st.adam_step, 3);
  EXPECT_EQ(std::memcmp(up0.raw(), st.unet_buf.master.raw(), up0.nbytes()), 0) << "UNet base frozen";
  EXPECT_EQ(std::memcmp(tp0.raw(), st.te_buf.master.raw(), tp0.nbytes()), 0) << "text encoder base frozen";
  EXPECT_NE(std::memcmp(ul0.raw(), st.unet_lora.master.raw(), ul0.nbytes()), 0);
  EXPECT_NE(std::memcmp(tl0.raw(), st.te_lora.master.raw(), tl0.nbytes()), 0);
  // The trained model equals the base with the adapters merged (what generate --lora computes).
  Tensor merged = st.unet_buf.master.clone();
  merge_lora(st.unet_buf.reg, merged, st.unet_lora.reg, st.unet_lora.master, lo.scale());
  const UNet2DConditionModel ref(st.unet_cfg, st.unet_buf.reg, merged);
  const Tensor x = nchw_to_nhwc(tr["train.latents"]).slice(0, 1),
               ehs = randn({1, 8, st.unet_cfg.cross_attention_dim}, 8);
  Tensor t = Tensor::empty({1});
  t.f32()[0] = 100.f;
  db::test::expect_close("trained vs merged", st.unet->forward(ctx, x, t, ehs), ref.forward(ctx, x, t, ehs),
                         kF32);
}

namespace {

// "unet." / "text_encoder." + registry name -> the golden's key.
void upload_golden(Ops& ops, const Golden& g, const std::string& component, ModelBuffers& b) {
  Tensor host = Tensor::zeros({b.reg.total_numel()});
  for (const ParamInfo& p : b.reg.params()) {
    const Tensor t = g["init." + component + p.name];
    ASSERT_EQ(t.shape(), p.torch_shape) << p.name;
    std::memcpy(host.f32() + p.offset, t.f32(), size_t(p.numel) * 4);
  }
  b.master = host.clone();
  b.refresh_working(ops);
}

}  // namespace

TEST(Lora, GoldenStepsMatchPeft) {
  CpuOps ops;
  Ctx ctx{ops};
  const GoldenBatch g = golden_batch();
  const Golden lg("sd1-tiny/lora_train.safetensors");
  TrainState st = TrainState::load(ops, *g.mf, false, false);
  LoraOptions lo;
  lo.rank = int(lg["lora.rank"].f32()[0]);
  lo.alpha = lg["lora.alpha"].f32()[0];
  lo.text_encoder = true;
  st.enable_lora(ops, lo, 0);
  upload_golden(ops, lg, "unet.", st.unet_lora);
  upload_golden(ops, lg, "text_encoder.", st.te_lora);
  st.bind();  // the masters were replaced
  const Tensor u0 = st.unet_lora.master.clone(), t0 = st.te_lora.master.clone();
  const NoiseSchedule sched(g.mf->scheduler);
  StepOptions opt;
  opt.lr = make_lr_schedule("constant", 1e-3f, 0, 3);
  opt.adam = AdamWConfig{0.9, 0.999, 1e-8, 1e-2};
  opt.max_grad_norm = 1.0f;
  const Tensor L = lg["lora.step_losses"], N = lg["lora.step_grad_norms"];
  double worst_grad = 0;
  for (int step = 0; step < 3; ++step) {
    TrainStep ts(ctx, st, sched, opt);
    ts.micro_batch(g.mb);
    if (step == 0) {  // the adapter gradients, before the update zeroes them
      ts.losses();
      for (const auto& [component, b] :
           {std::pair<std::string, ModelBuffers*>{"unet.", &st.unet_lora}, {"text_encoder.", &st.te_lora}})
        for (const ParamInfo& p : b->reg.params()) {
          const db::test::Diff d =
              db::test::diff(b->reg.view(b->grad, p).clone(), lg["grad." + component + p.name]);
          worst_grad = std::max(worst_grad, d.rel_l2);
          EXPECT_LE(d.rel_l2, kGolden) << component << p.name;
        }
    }
    ts.update(step);
    const StepResult sr = ts.finish();
    const double el = std::abs(sr.loss.loss - L.f32()[step]) / L.f32()[step];
    const double en = std::abs(sr.update.grad_norm - N.f32()[step]) / N.f32()[step];
    std::printf("  step %d  loss %.7f (ref %.7f, rel %.1e)  grad_norm %.6f (ref %.6f, rel %.1e)\n", step,
                sr.loss.loss, L.f32()[step], el, sr.update.grad_norm, N.f32()[step], en);
    EXPECT_TRUE(sr.update.applied);
    EXPECT_LE(el, kGolden);
    EXPECT_LE(en, kGolden);
  }
  double worst = 0, num_all = 0, den_all = 0;
  for (const auto& [component, b, p0] :
       {std::tuple<std::string, ModelBuffers*, const Tensor*>{"unet.", &st.unet_lora, &u0},
        {"text_encoder.", &st.te_lora, &t0}})
    for (const ParamInfo& p : b->reg.params()) {
      const Tensor ref = lg["step3." + component + p.name];
      const float *r = ref.f32(), *x0 = p0->f32() + p.offset, *x3 = b->master.f32() + p.offset;
      double num = 0, den = 0;
      for (int64_t i = 0; i < p.numel; ++i) {
        const double d = double(x3[i]) - r[i], u = double(r[i]) - x0[i];
        num += d * d;
        den += u * u;
      }
      num_all += num, den_all += den;
      worst = std::max(worst, std::sqrt(num / den));
      EXPECT_LE(std::sqrt(num / den), kUpdateTensor) << component << p.name;
    }
  std::printf("  worst gradient %.2e; 3-step update: worst tensor %.2e, all tensors %.2e\n", worst_grad,
              worst, std::sqrt(num_all / den_all));
  EXPECT_LE(std::sqrt(num_all / den_all), kUpdateAll);
}

// pytorch_lora_weights.safetensors: PEFT names with component prefixes, the text encoder without
// "text_model.", alpha / rank folded into B; read back into our names (merging the file = merging ours).
TEST(Lora, WeightsFileRoundTrip) {
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny/model"));
  const ParamRegistry ureg = mf.registry(Component::UNet), treg = mf.registry(Component::TextEncoder);
  const ParamRegistry lu = build_lora_registry(ureg, lora_unet_targets(), 2);
  const ParamRegistry lt = build_lora_registry(treg, lora_text_targets(), 2);
  const Tensor up = randn({lu.total_numel()}, 9), tp = randn({lt.total_numel()}, 10);
  const db::test::TempDir dir("lora");
  const std::string path = (dir.path / "pytorch_lora_weights.safetensors").string();
  write_lora_weights(path, lu, up, &lt, &tp, 0.25f, 0.5f, DType::F32);
  const SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_NE(f.find("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"), nullptr);
  EXPECT_NE(f.find("text_encoder.encoder.layers.1.self_attn.out_proj.lora_B.weight"), nullptr);
  EXPECT_EQ(f.metadata().at("dreambooth.lora_rank"), "2");
  const LoraWeights w = read_lora_weights(path);
  EXPECT_EQ(w.rank, 2);
  ASSERT_EQ(w.unet.params().size(), lu.params().size());
  ASSERT_EQ(w.text_encoder.params().size(), lt.params().size());
  Tensor a = mf.load(Component::UNet, ureg), b = a.clone();
  merge_lora(ureg, a, lu, up, 0.25f * 3.f);
  merge_lora(ureg, b, w.unet, w.unet_params, 3.f);
  db::test::expect_close("merged from the file", b, a, 1e-6);
  Tensor c = mf.load(Component::TextEncoder, treg), d = c.clone();
  merge_lora(treg, c, lt, tp, 0.25f);
  EXPECT_EQ(merge_lora(treg, d, w.text_encoder, w.te_params, 1.f), int(lt.params().size() / 2));
  db::test::expect_close("text encoder merged from the file", d, c, 1e-6);
}

// train --lora-rank end to end in-process: the output is pytorch_lora_weights.safetensors (no pipeline),
// checkpoints hold the adapters and moments, a resumed run ends bit-identical to an uninterrupted one,
// and resuming with another rank is refused.
TEST(Lora, TrainResumeIsBitIdentical) {
  const std::string model = db::test::golden_model("sd1-tiny");
  const db::test::TempDir dir("lora_resume");
  const std::string tmp = dir.str();
  db::test::write_latent_shard(tmp + "/inst.h5", "inst", 2, 500, 1);
  db::test::write_latent_shard(tmp + "/class.h5", "class", 2, 600, 2);
  TrainOptions o;
  o.model = model;
  o.instance = {tmp + "/inst.h5"};
  o.class_data = {tmp + "/class.h5"};
  o.seed = 7;
  o.max_steps = 4;
  o.lr = 1e-2f;
  o.checkpoint_every = 2;
  o.progress_seconds = 1e9;
  o.lora_rank = 4;
  o.lora_alpha = 8;
  o.lora_text_encoder = true;

  TrainOptions a = o;
  a.out = tmp + "/straight";
  EXPECT_EQ(run_train(a).end_step, 4);
  TrainOptions b = o;
  b.out = tmp + "/resumed";
  b.stop_after = 2;
  EXPECT_EQ(run_train(b).end_step, 2);
  b.stop_after = 0;
  b.resume = "latest";
  EXPECT_EQ(run_train(b).start_step, 2);
  for (const char* f : {"pytorch_lora_weights.safetensors", "checkpoint-4/lora.safetensors",
                        "checkpoint-4/pytorch_lora_weights.safetensors", "checkpoint-2/lora.safetensors"})
    EXPECT_TRUE(db::test::slurp(a.out + "/" + f) == db::test::slurp(b.out + "/" + f)) << f << " differs";
  EXPECT_FALSE(std::filesystem::exists(a.out + "/model_index.json"));
  EXPECT_FALSE(std::filesystem::exists(a.out + "/checkpoint-2/unet"));
  const LoraWeights w = read_lora_weights(a.out + "/pytorch_lora_weights.safetensors");
  EXPECT_EQ(w.rank, 4);
  EXPECT_TRUE(w.te_params.defined());

  TrainOptions c = o;
  c.out = b.out;
  c.resume = "latest";
  c.lora_rank = 8;
  EXPECT_THROW(run_train(c), Error);
}

// export --format single-file: the original SD layout's names and shapes on sd1-tiny (2 levels, 2 layers
// per block; the VAE 2 levels, 1 layer), the LoRA merged first. diffusers' from_single_file reading it
// back tensor for tensor is tests/reference/check_single_file.py (CI, check_outputs.sh).
TEST(Lora, ExportSingleFileLayout) {
  const db::test::TempDir dir("export");
  ExportOptions o;
  o.model = golden_path("sd1-tiny/model");
  o.out = (dir.path / "sd.safetensors").string();
  o.dtype = DType::F32;
  const ExportResult r = export_single_file(o);
  const SafetensorsFile f = SafetensorsFile::open(o.out);
  EXPECT_EQ(int64_t(f.tensors().size()), r.tensors);
  const ModelFolder mf = ModelFolder::open(o.model);
  const ParamRegistry ureg = mf.registry(Component::UNet), vreg = mf.registry(Component::Vae);
  const int64_t n = int64_t(ureg.params().size() + vreg.params().size() +
                            mf.registry(Component::TextEncoder).params().size());
  EXPECT_EQ(r.tensors, n);
  const Tensor up = mf.load(Component::UNet, ureg);
  // diffusers name -> original name (L = 2: input_blocks 1, 2 = down 0 resnets, 3 = its downsampler; the
  // up blocks have 3 resnets: output_blocks 0..2 = up 0, whose upsampler (no attention) is .2.1).
  const std::pair<const char*, const char*> names[] = {
      {"down_blocks.0.resnets.1.norm1.weight", "input_blocks.2.0.in_layers.0.weight"},
      {"down_blocks.0.attentions.1.proj_in.weight", "input_blocks.2.1.proj_in.weight"},
      {"down_blocks.0.downsamplers.0.conv.weight", "input_blocks.3.0.op.weight"},
      {"down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"},
      {"mid_block.resnets.1.time_emb_proj.weight", "middle_block.2.emb_layers.1.weight"},
      {"mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
       "middle_block.1.transformer_blocks.0.attn2.to_k.weight"},
      {"up_blocks.0.upsamplers.0.conv.weight", "output_blocks.2.1.conv.weight"},
      {"up_blocks.1.resnets.2.conv2.weight", "output_blocks.5.0.out_layers.3.weight"},
      {"up_blocks.1.attentions.2.proj_out.bias", "output_blocks.5.1.proj_out.bias"},
      {"time_embedding.linear_2.bias", "time_embed.2.bias"},
      {"conv_out.weight", "out.2.weight"}};
  for (const auto& [hf, sd] : names) {
    const SafeTensorInfo* t = f.find(std::string("model.diffusion_model.") + sd);
    ASSERT_NE(t, nullptr) << sd;
    const ParamInfo& p = ureg.at(hf);
    EXPECT_EQ(t->shape, p.torch_shape) << sd;
    Tensor got = Tensor::empty(p.torch_shape), want = db::test::torch_layout(ureg, up, p);
    f.read_f32(*t, got.f32());
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), got.nbytes()), 0) << sd;
  }
  for (const char* sd :
       {"first_stage_model.decoder.up.0.block.1.norm1.weight",
        "first_stage_model.decoder.up.1.upsample.conv.weight",
        "first_stage_model.encoder.down.0.downsample.conv.weight",
        "first_stage_model.encoder.mid.block_2.conv2.bias", "first_stage_model.encoder.norm_out.weight",
        "first_stage_model.post_quant_conv.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight"})
    EXPECT_NE(f.find(sd), nullptr) << sd;
  const SafeTensorInfo* q = f.find("first_stage_model.decoder.mid.attn_1.q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape.size(), 4u) << "the original's 1x1 conv";

  // With LoRA weights: the exported to_q equals the base + B A.
  const ParamRegistry lu = build_lora_registry(ureg, lora_unet_targets(), 2);
  const Tensor lp = randn({lu.total_numel()}, 12, 0.3f);
  const std::string lora = (dir.path / "pytorch_lora_weights.safetensors").string();
  write_lora_weights(lora, lu, lp, nullptr, nullptr, 1.f, 2.f, DType::F32);
  o.lora = lora;
  o.out = (dir.path / "sdl.safetensors").string();
  EXPECT_EQ(export_single_file(o).lora_merged, int(lu.params().size() / 2));
  Tensor merged = up.clone();
  merge_lora(ureg, merged, lu, lp, 1.f);
  const ParamInfo& p = ureg.at("up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight");
  const SafetensorsFile fl = SafetensorsFile::open(o.out);
  Tensor got = Tensor::empty(p.torch_shape);
  fl.read_f32(*fl.find("model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn1.to_q.weight"),
              got.f32());
  db::test::expect_close("exported merged to_q", got, db::test::torch_layout(ureg, merged, p), 0);
}

// generate --lora: the base folder with the LoRA file merged at load makes exactly the images of a folder
// whose saved weights are the merged ones (same host merge, same ops), and not those of the base.
TEST(Lora, GenerateMergesAtLoad) {
  const std::string base = golden_path("sd1-tiny/model");
  const ModelFolder mf = ModelFolder::open(base);
  const db::test::TempDir dir("lora_generate");
  const ParamRegistry ureg = mf.registry(Component::UNet), treg = mf.registry(Component::TextEncoder);
  const ParamRegistry lu = build_lora_registry(ureg, lora_unet_targets(), 2);
  const ParamRegistry lt = build_lora_registry(treg, lora_text_targets(), 2);
  const Tensor up = randn({lu.total_numel()}, 13, 0.3f), tp = randn({lt.total_numel()}, 14, 0.3f);
  const std::string lora = (dir.path / "pytorch_lora_weights.safetensors").string();
  write_lora_weights(lora, lu, up, &lt, &tp, 1.f, 2.f, DType::F32);
  const std::string merged = (dir.path / "merged").string();
  std::filesystem::copy(base, merged, std::filesystem::copy_options::recursive);
  Tensor uw = mf.load(Component::UNet, ureg), tw = mf.load(Component::TextEncoder, treg);
  merge_lora(ureg, uw, lu, up, 0.5f);
  merge_lora(treg, tw, lt, tp, 0.5f);
  save_component(merged, Component::UNet, mf.config_json(Component::UNet), ureg, uw, DType::F32);
  save_component(merged, Component::TextEncoder, mf.config_json(Component::TextEncoder), treg, tw,
                 DType::F32);

  GenerateOptions o;
  o.prompt = "photo of unqtkn dog";
  o.steps = 2;
  o.num_images = 1;
  o.device = "cpu";
  o.progress = false;
  o.keep_results = true;
  auto run = [&](const std::string& model, const std::string& l) {
    GenerateOptions g = o;
    g.model = model;
    g.lora = l;
    g.lora_scale = 0.5f;
    return generate_images(g).images.at(0).rgb;
  };
  const std::vector<uint8_t> with_lora = run(base, lora), ref = run(merged, ""), plain = run(base, "");
  EXPECT_EQ(with_lora, ref);
  EXPECT_NE(with_lora, plain);
}

// export --format kohya-lora: kohya's keys (lora_unet_/lora_te_ + the module path with '_', lora_down = A,
// lora_up = B, alpha = rank as the scale is folded into B already). diffusers reading it back as the same
// W + B A is check_lora_loads.py with a LOADED_FILE (CI, check_outputs.sh).
TEST(Lora, KohyaExportNames) {
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny/model"));
  const ParamRegistry ureg = mf.registry(Component::UNet), treg = mf.registry(Component::TextEncoder);
  const ParamRegistry lu = build_lora_registry(ureg, lora_unet_targets(), 2);
  const ParamRegistry lt = build_lora_registry(treg, lora_text_targets(), 2);
  const Tensor up = randn({lu.total_numel()}, 15), tp = randn({lt.total_numel()}, 16);
  const db::test::TempDir dir("kohya");
  const std::string peft = (dir.path / "pytorch_lora_weights.safetensors").string(),
                    kohya = (dir.path / "kohya.safetensors").string();
  write_lora_weights(peft, lu, up, &lt, &tp, 1.f, 2.f, DType::F32);
  EXPECT_EQ(write_kohya_lora(kohya, read_lora_weights(peft), DType::F32),
            int((lu.params().size() + lt.params().size()) / 2));
  const SafetensorsFile f = SafetensorsFile::open(kohya);
  const SafeTensorInfo* down =
      f.find("lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_down.weight");
  ASSERT_NE(down, nullptr);
  const ParamInfo& a = lu.at("up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_A.weight");
  EXPECT_EQ(down->shape, a.torch_shape);
  Tensor got = Tensor::empty(a.torch_shape);
  f.read_f32(*down, got.f32());
  EXPECT_EQ(std::memcmp(got.f32(), up.f32() + a.offset, got.nbytes()), 0);
  EXPECT_NE(f.find("lora_te_text_model_encoder_layers_1_self_attn_v_proj.lora_up.weight"), nullptr);
  const SafeTensorInfo* alpha = f.find("lora_te_text_model_encoder_layers_1_self_attn_v_proj.alpha");
  ASSERT_NE(alpha, nullptr);
  float av = 0;
  f.read_f32(*alpha, &av);
  EXPECT_EQ(av, 2.f);
}
