// NnBackward.*: each nn/ layer's training forward + backward against torch autograd on the diffusers /
// transformers module itself (tests/reference/make_nn_grad_golden.py): dx (and dcontext / dtemb) and
// every parameter gradient, read back from a gradient buffer laid out by the ParamRegistry.
//
// Tolerance: relative L2 <= 1e-5 per tensor, as for the ops (fp32 on both sides, different summation
// order); a layer chains 2-20 ops whose rounding errors (~1e-7 each) add, not multiply.
#include <gtest/gtest.h>

#include <cstring>

#include "dreambooth/models/registry.h"
#include "dreambooth/nn/clip_encoder_layer.h"
#include "dreambooth/nn/resample.h"
#include "dreambooth/nn/resnet_block.h"
#include "dreambooth/nn/timestep_embedding.h"
#include "dreambooth/nn/transformer_2d.h"
#include "dreambooth/backend/cpu_ops.h"
#include "test_helpers.h"

using namespace db;
using db::test::expect_close;
using db::test::Golden;

namespace {

constexpr double kTol = 1e-5;

const Golden& golden() {
  static const Golden g("nn_grad/nn_grad.safetensors");
  return g;
}

// One case's parameters and gradient buffer, bound through a registry.
struct Bound : db::test::GoldenParams {
  std::string c;
  ParamSet p() const { return ParamSet(reg, params); }
  ParamSet g() const { return ParamSet(reg, grads); }
  Tensor in(const std::string& name) const { return golden()[c + "." + name]; }
};

Bound bind(const std::string& c) {
  Bound b;
  static_cast<db::test::GoldenParams&>(b) = db::test::load_params(golden(), c + ".param.");
  b.c = c;
  return b;
}

void expect_param_grads(const Bound& b) {
  db::test::expect_param_grads(b, golden(), b.c + ".grad.", kTol);
}

// The training forward must compute exactly what the inference forward does.
void expect_same_bits(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0)
      << what << ": training forward differs from inference";
}

}  // namespace

TEST(NnBackward, ResnetBlock2D) {
  CpuOps ops;
  Ctx ctx{ops};
  for (const char* name : {"resnet", "resnet_same"}) {
    Bound b = bind(name);
    ResnetOptions o;
    o.groups = 4;
    o.eps = 1e-5f;
    ResnetBlock2D layer(b.p(), o), grad(b.g(), o);
    Tensor x = b.in("x"), temb = b.in("temb");
    ResnetBlock2D::Saved s;
    Tensor y = layer.forward(ctx, x, temb, &s);
    expect_same_bits(y, layer.forward(ctx, x, temb), b.c);
    expect_close(b.c + ".y", y, b.in("y"), kTol);
    Tensor dtemb = Tensor::zeros(temb.shape());
    Tensor dx = layer.backward(ctx, s, b.in("dy"), &grad, &dtemb);
    expect_close(b.c + ".dx", dx, b.in("dx"), kTol);
    expect_close(b.c + ".dtemb", dtemb, b.in("dtemb"), kTol);
    expect_param_grads(b);
  }
}

TEST(NnBackward, ResnetBlock2DScaledNoTimeEmbedding) {
  CpuOps ops;
  Ctx ctx{ops};
  Bound b = bind("resnet_scaled");
  ResnetOptions o;
  o.groups = 4;
  o.eps = 1e-6f;
  o.output_scale_factor = 2.f;
  ResnetBlock2D layer(b.p(), o), grad(b.g(), o);
  ResnetBlock2D::Saved s;
  Tensor y = layer.forward(ctx, b.in("x"), Tensor(), &s);
  expect_same_bits(y, layer.forward(ctx, b.in("x"), Tensor()), b.c);
  expect_close(b.c + ".y", y, b.in("y"), kTol);
  expect_close(b.c + ".dx", layer.backward(ctx, s, b.in("dy"), &grad, nullptr), b.in("dx"), kTol);
  expect_param_grads(b);
}

TEST(NnBackward, Resample) {
  CpuOps ops;
  Ctx ctx{ops};
  {
    Bound b = bind("downsample");
    Downsample2D layer(b.p(), 1), grad(b.g(), 1);
    Downsample2D::Saved s;
    Tensor y = layer.forward(ctx, b.in("x"), &s);
    expect_close("downsample.y", y, b.in("y"), kTol);
    expect_close("downsample.dx", layer.backward(ctx, s, b.in("dy"), &grad), b.in("dx"), kTol);
    expect_param_grads(b);
  }
  {
    Bound b = bind("upsample");
    Upsample2D layer(b.p()), grad(b.g());
    Upsample2D::Saved s;
    Tensor y = layer.forward(ctx, b.in("x"), &s);
    expect_same_bits(y, layer.forward(ctx, b.in("x")), "upsample");
    expect_close("upsample.y", y, b.in("y"), kTol);
    expect_close("upsample.dx", layer.backward(ctx, s, b.in("dy"), &grad), b.in("dx"), kTol);
    expect_param_grads(b);
  }
}

TEST(NnBackward, TimestepEmbedding) {
  CpuOps ops;
  Ctx ctx{ops};
  Bound b = bind("timestep_embedding");
  TimestepEmbeddingParams tp;  // flip_sin_to_cos, shift 0 (SD)
  TimestepEmbedding layer(b.p(), 8, tp, Activation::SiLU), grad(b.g(), 8, tp, Activation::SiLU);
  TimestepEmbedding::Saved s;
  Tensor y = layer.forward(ctx, b.in("t"), &s);
  expect_same_bits(y, layer.forward(ctx, b.in("t")), b.c);
  expect_close(b.c + ".y", y, b.in("y"), kTol);
  layer.backward(ctx, s, b.in("dy"), &grad);
  expect_param_grads(b);
}

TEST(NnBackward, AttentionAndFeedForward) {
  CpuOps ops;
  Ctx ctx{ops};
  for (const char* name : {"attention_self", "attention_cross"}) {
    Bound b = bind(name);
    Attention layer(b.p(), 2), grad(b.g(), 2);
    const bool cross = b.c == "attention_cross";
    Tensor x = b.in("x"), context = cross ? b.in("context") : Tensor();
    Attention::Saved s;
    Tensor y = layer.forward(ctx, x, context, &s);
    expect_same_bits(y, layer.forward(ctx, x, context), b.c);
    expect_close(b.c + ".y", y, b.in("y"), kTol);
    Tensor dcontext = cross ? Tensor::zeros(context.shape()) : Tensor();
    Tensor dx = layer.backward(ctx, s, b.in("dy"), &grad, cross ? &dcontext : nullptr);
    expect_close(b.c + ".dx", dx, b.in("dx"), kTol);
    if (cross) expect_close(b.c + ".dcontext", dcontext, b.in("dcontext"), kTol);
    expect_param_grads(b);
  }
  Bound b = bind("feed_forward");
  FeedForward layer(b.p()), grad(b.g());
  FeedForward::Saved s;
  Tensor y = layer.forward(ctx, b.in("x"), &s);
  expect_close("feed_forward.y", y, b.in("y"), kTol);
  expect_close("feed_forward.dx", layer.backward(ctx, s, b.in("dy"), &grad), b.in("dx"), kTol);
  expect_param_grads(b);
}

TEST(NnBackward, BasicTransformerBlock) {
  CpuOps ops;
  Ctx ctx{ops};
  Bound b = bind("transformer_block");
  BasicTransformerBlock layer(b.p(), 2, 1e-5f, false, false), grad(b.g(), 2, 1e-5f, false, false);
  Tensor x = b.in("x"), context = b.in("context");
  BasicTransformerBlock::Saved s;
  Tensor y = layer.forward(ctx, x, context, &s);
  expect_same_bits(y, layer.forward(ctx, x, context), b.c);
  expect_close(b.c + ".y", y, b.in("y"), kTol);
  Tensor dcontext = Tensor::zeros(context.shape());
  expect_close(b.c + ".dx", layer.backward(ctx, s, b.in("dy"), &grad, &dcontext), b.in("dx"), kTol);
  expect_close(b.c + ".dcontext", dcontext, b.in("dcontext"), kTol);
  expect_param_grads(b);
}

TEST(NnBackward, Transformer2D) {
  CpuOps ops;
  Ctx ctx{ops};
  for (const char* name : {"transformer_2d_conv", "transformer_2d_linear"}) {
    Bound b = bind(name);
    Transformer2DOptions o;
    o.heads = 2;
    o.norm_groups = 4;
    Transformer2D layer(b.p(), o), grad(b.g(), o);
    Tensor x = b.in("x"), context = b.in("context");
    Transformer2D::Saved s;
    Tensor y = layer.forward(ctx, x, context, &s);
    expect_same_bits(y, layer.forward(ctx, x, context), b.c);
    expect_close(b.c + ".y", y, b.in("y"), kTol);
    Tensor dcontext = Tensor::zeros(context.shape());
    expect_close(b.c + ".dx", layer.backward(ctx, s, b.in("dy"), &grad, &dcontext), b.in("dx"), kTol);
    expect_close(b.c + ".dcontext", dcontext, b.in("dcontext"), kTol);
    expect_param_grads(b);
  }
}

TEST(NnBackward, ClipEncoderLayer) {
  CpuOps ops;
  Ctx ctx{ops};
  for (const char* name : {"clip_layer", "clip_layer_gelu"}) {
    Bound b = bind(name);
    const Activation act = b.c == "clip_layer" ? Activation::QuickGELU : Activation::GELU;
    ClipEncoderLayer layer(b.p(), 2, 1e-5f, act), grad(b.g(), 2, 1e-5f, act);
    ClipEncoderLayer::Saved s;
    Tensor y = layer.forward(ctx, b.in("x"), &s);
    expect_same_bits(y, layer.forward(ctx, b.in("x")), b.c);
    expect_close(b.c + ".y", y, b.in("y"), kTol);
    expect_close(b.c + ".dx", layer.backward(ctx, s, b.in("dy"), &grad), b.in("dx"), kTol);
    expect_param_grads(b);
  }
}

// Parameter gradients accumulate: a second backward into the same buffer doubles them.
TEST(NnBackward, ParamGradsAccumulate) {
  CpuOps ops;
  Ctx ctx{ops};
  Bound b = bind("transformer_block");
  BasicTransformerBlock layer(b.p(), 2, 1e-5f, false, false), grad(b.g(), 2, 1e-5f, false, false);
  BasicTransformerBlock::Saved s;
  layer.forward(ctx, b.in("x"), b.in("context"), &s);
  layer.backward(ctx, s, b.in("dy"), &grad, nullptr);
  Tensor once = b.grads.clone();
  layer.backward(ctx, s, b.in("dy"), &grad, nullptr);
  for (int64_t i = 0; i < once.numel(); ++i) once.f32()[i] *= 2.f;
  expect_close("transformer_block grads after two backwards", b.grads, once, 1e-6);
}
