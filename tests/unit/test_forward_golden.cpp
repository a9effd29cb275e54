// ForwardGolden.*: each model's forward pass against diffusers/transformers on every golden preset
// (tests/reference/make_golden.py: <preset>/forward.safetensors), one parametrised test:
//   UNet   UNet2DConditionModel(sample, per-sample timesteps, encoder states) -> sample (batch 2)
//   Clip   CLIPTextModel(ids) -> last_hidden_state (4 prompts: short, empty, truncated)
//   Vae    AutoencoderKL encode (image -> moments after quant_conv) and decode (z -> image)
// Bound: relative L2 <= kForwardRelL2 (test_helpers.h says why and what it catches).
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/models/vae.h"
#include "test_helpers.h"

using namespace db;
using db::test::expect_close;
using db::test::Golden;
using db::test::kForwardRelL2;
using db::test::nchw_to_nhwc;

namespace {

enum class Model { UNet, Clip, Vae };

const char* model_name(Model m) {
  return m == Model::UNet ? "UNet" : m == Model::Clip ? "Clip" : "Vae";
}
void PrintTo(Model m, std::ostream* os) {  // GoogleTest prints parameters with it
  *os << model_name(m);
}

class ForwardGolden : public ::testing::TestWithParam<std::tuple<Model, std::string>> {};

void check_unet(const ModelFolder& mf, const Golden& f, const std::string& preset) {
  const ParamRegistry reg = mf.registry(Component::UNet);
  const Tensor flat = mf.load(Component::UNet, reg);
  const Tensor sample = nchw_to_nhwc(f["unet.sample"]);  // [B, h, w, C]
  const Tensor steps = f["unet.timesteps"];              // int64 [B]
  Tensor t = Tensor::empty({steps.numel()});
  for (int64_t i = 0; i < steps.numel(); ++i) t.f32()[i] = float(steps.data<int64_t>()[i]);
  CpuOps ops;
  Ctx ctx{ops};
  UNet2DConditionModel model(mf.unet, reg, flat);
  const Tensor got = model.forward(ctx, sample, t, f["unet.encoder_hidden_states"]);
  expect_close(preset + " unet out", got, nchw_to_nhwc(f["unet.out"]), kForwardRelL2);
}

void check_clip(const ModelFolder& mf, const Golden& f, const std::string& preset) {
  const ParamRegistry reg = mf.registry(Component::TextEncoder);
  const Tensor flat = mf.load(Component::TextEncoder, reg);
  CpuOps ops;
  Ctx ctx{ops};
  ClipTextModel model(mf.text_encoder, reg, flat);
  const Tensor got = model.forward(ctx, f["text.input_ids"]);  // [B, 77, H]
  expect_close(preset + " text_encoder last_hidden_state", got, f["text.last_hidden_state"], kForwardRelL2);
}

void check_vae(const ModelFolder& mf, const Golden& f, const std::string& preset) {
  const ParamRegistry reg = mf.registry(Component::Vae);
  const Tensor flat = mf.load(Component::Vae, reg);
  CpuOps ops;
  Ctx ctx{ops};
  AutoencoderKL model(mf.vae, reg, flat);
  const Tensor moments = model.encode(ctx, nchw_to_nhwc(f["vae.image"]));  // [B, h, w, 2 * latent]
  expect_close(preset + " vae moments", moments, nchw_to_nhwc(f["vae.moments"]), kForwardRelL2);
  const Tensor decoded = model.decode(ctx, nchw_to_nhwc(f["vae.z"]));  // [B, H, W, 3]
  expect_close(preset + " vae decoded", decoded, nchw_to_nhwc(f["vae.decoded"]), kForwardRelL2);
}

}  // namespace

TEST_P(ForwardGolden, MatchesReference) {
  const auto& [model, preset] = GetParam();
  const ModelFolder mf = ModelFolder::open(db::test::golden_path(preset + "/model"));
  const Golden f(preset + "/forward.safetensors");
  switch (model) {
    case Model::UNet:
      return check_unet(mf, f, preset);
    case Model::Clip:
      return check_clip(mf, f, preset);
    case Model::Vae:
      return check_vae(mf, f, preset);
  }
}

std::string case_name(const ::testing::TestParamInfo<ForwardGolden::ParamType>& info) {
  return std::string(model_name(std::get<0>(info.param))) + "_" +
         db::test::param_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Presets, ForwardGolden,
                         ::testing::Combine(::testing::Values(Model::UNet, Model::Clip, Model::Vae),
                                            ::testing::ValuesIn(db::test::golden_presets())),
                         case_name);
