// ModelBackward.*: UNet2DConditionModel and CLIPTextModel backward against torch autograd on tiny random
// diffusers / transformers models (tests/reference/make_model_grad_golden.py): every parameter gradient
// and the encoder states' gradient.
//
// Tolerance: relative L2 <= 1e-4 per tensor. The UNet chains ~150 ops (fp32 both sides, different
// summation orders); rounding differences grow along the chain and through the skips, and the smallest
// gradients (deepest layers, biases behind group norms) sit at ~1e-5 relative.
#include <gtest/gtest.h>

#if __has_include("dreambooth/models/presets.h")  // the registry's implementation (models branch)

#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/unet.h"
#include "golden.h"

using namespace db;
using db::test::expect_close;
using db::test::Golden;

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
  Tensor y = unet.forward(ctx, sample, t, ehs, s);
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
  Tensor y = clip.forward(ctx, ids, s);
  expect_same_bits(y, clip.forward(ctx, ids), "clip");
  expect_close("clip.y", y, g["clip.y"], 1e-5);
  clip.backward(ctx, s, g["clip.dy"], &grad);
  db::test::expect_param_grads(b, g, "clip.grad.", kTol);
}

#else
TEST(ModelBackward, NeedsParamRegistry) {
  GTEST_SKIP() << "the ParamRegistry implementation (models branch) is not merged yet";
}
#endif
