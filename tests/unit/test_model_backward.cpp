// ModelBackward.*: UNet2DConditionModel and CLIPTextModel backward against torch autograd on tiny random
// diffusers / transformers models (tests/reference/make_model_grad_golden.py): every parameter gradient
// and the encoder states' gradient.
//
// Tolerance: relative L2 <= 1e-4 per tensor. The UNet chains ~150 ops (fp32 both sides, different
// summation orders) and the rounding differences add up along the chain and the skips. Measured: most
// gradients 1e-7..5e-6; the worst are small, nearly cancelling sums, e.g. a cross-attention norm2.bias
// (|grad| ~1e-10): 1.7e-5 (tiny UNet below), 1.2e-5 / 1.9e-5 / 4.6e-5 (harness sd1-tiny / sd2-tiny /
// extra). A structural bug (missing residual or skip, wrong head split, swapped GEGLU half) gives >= 1e-2.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/unet.h"
#include "test_helpers.h"

using namespace db;
using db::test::expect_close;
using db::test::Golden;
using db::test::golden_path;
using db::test::nchw_to_nhwc;

namespace {

constexpr double kTol = 1e-4;

const Golden& golden() {
  static const Golden g("model_grad/model_grad.safetensors");
  return g;
}

void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0)
      << what << ": training forward differs from inference";
}

}  // namespace

// The UNET dict of make_model_grad_golden.py.
TEST(ModelBackward, UNet) {
  CpuOps ops;
  Ctx ctx{ops};
  const Golden& g = golden();
  UNetConfig cfg;
  cfg.sample_size = 8;
  cfg.layers_per_block = 1;
  cfg.block_out_channels = {8, 16};
  cfg.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D"};
  cfg.up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D"};
  cfg.cross_attention_dim = 12;
  cfg.num_heads = {2, 2};
  cfg.norm_num_groups = 4;
  cfg.norm_eps = 1e-5f;
  db::test::GoldenParams b = db::test::load_params(g, "unet.param.");
  UNet2DConditionModel unet(cfg, b.reg, b.params), grad(cfg, b.reg, b.grads);
  const Tensor sample = g["unet.sample"], t = g["unet.timesteps"], ehs = g["unet.ehs"];
  UNet2DConditionModel::Saved s;
  Tensor y = unet.forward(ctx, sample, t, ehs, &s);
  expect_same_bits(y, unet.forward(ctx, sample, t, ehs), "unet");
  expect_close("unet.y", y, g["unet.y"], 1e-5);
  Tensor dehs = Tensor::zeros(ehs.shape());
  unet.backward(ctx, s, g["unet.dy"], &grad, &dehs);
  expect_close("unet.dehs", dehs, g["unet.dehs"], kTol);
  db::test::expect_param_grads(b, g, "unet.grad.", kTol);
}

// The CLIP dict of make_model_grad_golden.py.
TEST(ModelBackward, ClipText) {
  CpuOps ops;
  Ctx ctx{ops};
  const Golden& g = golden();
  ClipTextConfig cfg;
  cfg.vocab_size = 50;
  cfg.hidden_size = 16;
  cfg.intermediate_size = 24;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 2;
  cfg.max_position_embeddings = 8;
  cfg.hidden_act = "quick_gelu";
  cfg.layer_norm_eps = 1e-5f;
  db::test::GoldenParams b = db::test::load_params(g, "clip.param.");
  ClipTextModel clip(cfg, b.reg, b.params), grad(cfg, b.reg, b.grads);
  const Tensor idf = g["clip.ids"];
  Tensor ids = Tensor::empty(idf.shape(), DType::I64);
  for (int64_t i = 0; i < idf.numel(); ++i) ids.data<int64_t>()[i] = int64_t(idf.f32()[i]);
  ClipTextModel::Saved s;
  Tensor y = clip.forward(ctx, ids, &s);
  expect_same_bits(y, clip.forward(ctx, ids), "clip");
  expect_close("clip.y", y, g["clip.y"], 1e-5);
  clip.backward(ctx, s, g["clip.dy"], &grad);
  db::test::expect_param_grads(b, g, "clip.grad.", kTol);
}

// One DreamBooth step (prior preservation, text encoder trained) against the reference harness's
// train.safetensors (tests/reference/make_golden.py, diffusers train_dreambooth.py) of every golden preset:
// text encoder and UNet training forwards, the loss gradient d/dpred [mse(inst) + mse(class)] =
// 2 (pred - target) / numel of each half, then both backwards; every UNet and text-encoder gradient.
class DreamBoothStep : public ::testing::TestWithParam<std::string> {};

TEST_P(DreamBoothStep, MatchesHarness) {
  CpuOps ops;
  Ctx ctx{ops};
  const std::string name = GetParam(), dir = golden_path(name);
  const Golden tr(name + "/train.safetensors");
  const Golden uw(name + "/model/unet/diffusion_pytorch_model.safetensors");
  const Golden tw(name + "/model/text_encoder/model.safetensors");
  const UNetConfig uc =
      parse_unet_config(read_json_file(dir + "/model/unet/config.json"), "unet/config.json");
  const ClipTextConfig cc = parse_clip_text_config(read_json_file(dir + "/model/text_encoder/config.json"),
                                                   "text_encoder/config.json");
  db::test::GoldenParams up = db::test::load_params(uw, ""), tp = db::test::load_params(tw, "");
  UNet2DConditionModel unet(uc, up.reg, up.params), ugrad(uc, up.reg, up.grads);
  ClipTextModel te(cc, tp.reg, tp.params), tgrad(cc, tp.reg, tp.grads);

  ClipTextModel::Saved ts;
  Tensor ehs = te.forward(ctx, tr["train.input_ids"], &ts);  // [2B, 77, D]
  expect_close("encoder_hidden_states", ehs, tr["train.encoder_hidden_states"], 1e-5);
  const Tensor t64 = tr["train.timesteps"];
  Tensor t = Tensor::empty({t64.numel()});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(t64.data<int64_t>()[i]);
  UNet2DConditionModel::Saved us;
  Tensor pred = unet.forward(ctx, nchw_to_nhwc(tr["train.noisy_latents"]), t, ehs, &us);
  expect_close("model_pred", pred, nchw_to_nhwc(tr["train.model_pred"]), 1e-5);
  const Tensor target = nchw_to_nhwc(tr["train.target"]);
  Tensor dpred = Tensor::empty(pred.shape());
  const int64_t half = pred.numel() / 2;  // instance samples first, then class samples
  for (int64_t i = 0; i < pred.numel(); ++i)
    dpred.f32()[i] = 2.f * (pred.f32()[i] - target.f32()[i]) / float(half);
  Tensor dehs = Tensor::zeros(ehs.shape());
  unet.backward(ctx, us, dpred, &ugrad, &dehs);
  te.backward(ctx, ts, dehs, &tgrad);
  db::test::expect_param_grads(up, tr, "grad.unet.", kTol);
  db::test::expect_param_grads(tp, tr, "grad.text_encoder.", kTol);
}

INSTANTIATE_TEST_SUITE_P(Presets, DreamBoothStep, ::testing::ValuesIn(db::test::golden_presets()),
                         [](const auto& info) { return db::test::param_name(info.param); });

// --gradient-checkpointing: the UNet keeps only each block's inputs and recomputes the block's training
// forward right before its backward. Same operations in the same order: the prediction, every parameter
// gradient and the encoder states' gradient must be the same bits as without checkpointing.
TEST(Unet, GradientCheckpointingIsExact) {
  CpuOps ops;
  Ctx ctx{ops};
  const std::string dir = golden_path("sd1-tiny");
  const Golden tr("sd1-tiny/train.safetensors");
  const Golden uw("sd1-tiny/model/unet/diffusion_pytorch_model.safetensors");
  const Golden tw("sd1-tiny/model/text_encoder/model.safetensors");
  const UNetConfig uc =
      parse_unet_config(read_json_file(dir + "/model/unet/config.json"), "unet/config.json");
  const ClipTextConfig cc = parse_clip_text_config(read_json_file(dir + "/model/text_encoder/config.json"),
                                                   "text_encoder/config.json");
  db::test::GoldenParams up = db::test::load_params(uw, ""), tp = db::test::load_params(tw, "");
  const Tensor grads_ckpt = Tensor::zeros(up.grads.shape());
  UNet2DConditionModel unet(uc, up.reg, up.params), ugrad(uc, up.reg, up.grads),
      ugrad_ckpt(uc, up.reg, grads_ckpt);
  ClipTextModel te(cc, tp.reg, tp.params);
  const Tensor ehs = te.forward(ctx, tr["train.input_ids"]);
  const Tensor t64 = tr["train.timesteps"];
  Tensor t = Tensor::empty({t64.numel()});
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(t64.data<int64_t>()[i]);
  const Tensor noisy = nchw_to_nhwc(tr["train.noisy_latents"]), target = nchw_to_nhwc(tr["train.target"]);

  UNet2DConditionModel::Saved plain, ckpt;
  ckpt.gradient_checkpointing = true;
  const Tensor pred = unet.forward(ctx, noisy, t, ehs, &plain);
  const Tensor pred_ckpt = unet.forward(ctx, noisy, t, ehs, &ckpt);
  expect_same_bits(pred, pred_ckpt, "checkpointed prediction");
  EXPECT_TRUE(ckpt.down.empty() && ckpt.up.empty() && ckpt.mid.resnets.empty());
  EXPECT_EQ(ckpt.down_in.size(), plain.down.size());
  Tensor dpred = Tensor::empty(pred.shape());
  for (int64_t i = 0; i < pred.numel(); ++i) dpred.f32()[i] = 2.f * (pred.f32()[i] - target.f32()[i]);
  Tensor dehs = Tensor::zeros(ehs.shape()), dehs_ckpt = Tensor::zeros(ehs.shape());
  unet.backward(ctx, plain, dpred, &ugrad, &dehs);
  unet.backward(ctx, ckpt, dpred, &ugrad_ckpt, &dehs_ckpt);
  expect_same_bits(dehs, dehs_ckpt, "checkpointed encoder states gradient");
  ASSERT_EQ(up.grads.nbytes(), grads_ckpt.nbytes());
  EXPECT_EQ(std::memcmp(up.grads.raw(), grads_ckpt.raw(), up.grads.nbytes()), 0)
      << "checkpointed parameter gradients differ";
  double norm = 0;
  for (int64_t i = 0; i < up.grads.numel(); ++i) norm += double(up.grads.f32()[i]) * up.grads.f32()[i];
  EXPECT_GT(norm, 0.0);  // the comparison is not vacuous
}

// The text encoder's per-layer checkpointing: same bits as without it.
TEST(ClipText, GradientCheckpointingIsExact) {
  CpuOps ops;
  Ctx ctx{ops};
  const std::string dir = golden_path("sd1-tiny");
  const Golden tr("sd1-tiny/train.safetensors");
  const Golden tw("sd1-tiny/model/text_encoder/model.safetensors");
  const ClipTextConfig cc = parse_clip_text_config(read_json_file(dir + "/model/text_encoder/config.json"),
                                                   "text_encoder/config.json");
  db::test::GoldenParams tp = db::test::load_params(tw, "");
  const Tensor grads_ckpt = Tensor::zeros(tp.grads.shape());
  ClipTextModel te(cc, tp.reg, tp.params), tgrad(cc, tp.reg, tp.grads), tgrad_ckpt(cc, tp.reg, grads_ckpt);
  ClipTextModel::Saved plain, ckpt;
  ckpt.gradient_checkpointing = true;
  const Tensor y = te.forward(ctx, tr["train.input_ids"], &plain);
  const Tensor y_ckpt = te.forward(ctx, tr["train.input_ids"], &ckpt);
  expect_same_bits(y, y_ckpt, "checkpointed text encoder output");
  EXPECT_TRUE(ckpt.layers.empty());
  EXPECT_EQ(ckpt.layer_in.size(), plain.layers.size());
  Tensor dy = Tensor::empty(y.shape());
  for (int64_t i = 0; i < y.numel(); ++i) dy.f32()[i] = y.f32()[i] * 1e-3f - 1e-4f * float(i % 7);
  te.backward(ctx, plain, dy, &tgrad);
  te.backward(ctx, ckpt, dy, &tgrad_ckpt);
  ASSERT_EQ(tp.grads.nbytes(), grads_ckpt.nbytes());
  EXPECT_EQ(std::memcmp(tp.grads.raw(), grads_ckpt.raw(), tp.grads.nbytes()), 0)
      << "checkpointed text-encoder gradients differ";
}

// What checkpointing saves: backend memory in use after the UNet's training forward (the Saved struct
// and the prediction) and the peak over forward + backward, with and without it, on the sd1-tiny UNet at
// 32x32 latents, batch 2; and the extra compute of the recomputation (forward + backward wall time).
// Measured from the backend's pool (Ops::memory_stats), so sanitizers replacing malloc do not matter.
// Printed; asserts only that it saves.
TEST(Unet, GradientCheckpointingMemory) {
  CpuOps ops;
  Ctx ctx{ops};
  const std::string dir = golden_path("sd1-tiny");
  const Golden uw("sd1-tiny/model/unet/diffusion_pytorch_model.safetensors");
  const UNetConfig uc =
      parse_unet_config(read_json_file(dir + "/model/unet/config.json"), "unet/config.json");
  db::test::GoldenParams up = db::test::load_params(uw, "");
  UNet2DConditionModel unet(uc, up.reg, up.params), ugrad(uc, up.reg, up.grads);
  const int64_t B = 2, H = 32, T = 77;
  Tensor sample = Tensor::empty({B, H, H, int64_t(uc.in_channels)});
  for (int64_t i = 0; i < sample.numel(); ++i) sample.f32()[i] = float((i * 37) % 101) / 50.f - 1.f;
  Tensor ehs = Tensor::empty({B, T, int64_t(uc.cross_attention_dim)});
  for (int64_t i = 0; i < ehs.numel(); ++i) ehs.f32()[i] = float((i * 13) % 29) / 14.f - 1.f;
  Tensor t = Tensor::empty({B});
  t.f32()[0] = 10.f;
  t.f32()[1] = 700.f;
  double held[2], peak[2], secs[2];
  for (int c = 0; c < 2; ++c) {
    const double before = double(ops.memory_stats().in_use);
    ops.reset_peak_memory();
    const auto t0 = std::chrono::steady_clock::now();
    UNet2DConditionModel::Saved s;
    s.gradient_checkpointing = c == 1;
    Tensor pred = unet.forward(ctx, sample, t, ehs, &s);
    held[c] = double(ops.memory_stats().in_use) - before;
    Tensor dpred = pred.clone();
    unet.backward(ctx, s, dpred, &ugrad, nullptr);
    secs[c] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    peak[c] = double(ops.memory_stats().peak) - before;
  }
  std::printf(
      "  sd1-tiny UNet, latents %lldx%lld, batch %lld: held after the training forward %.2f MiB "
      "plain, %.2f MiB checkpointed (%.1f%%); peak %.2f vs %.2f MiB; forward+backward %.3f s vs %.3f s "
      "(+%.0f%%)\n",
      (long long)H, (long long)H, (long long)B, held[0] / 1048576.0, held[1] / 1048576.0,
      100.0 * held[1] / held[0], peak[0] / 1048576.0, peak[1] / 1048576.0, secs[0], secs[1],
      100.0 * (secs[1] / secs[0] - 1.0));
  EXPECT_LT(peak[1], peak[0]);
  EXPECT_LT(held[1], 0.5 * held[0]);
}
