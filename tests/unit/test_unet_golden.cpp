// Unet.*: UNet2DConditionModel forward (batch 2, different timesteps) against
// diffusers (golden_util.h: the bound).
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/models/unet.h"
#include "golden_util.h"

using namespace db;

namespace {

void run_unet(const std::string& preset) {
  const std::string dir = golden::preset_dir(preset);
  if (dir.empty())
    GTEST_SKIP() << "no golden folder " << golden::root() << "/" << preset << " (run tests/reference)";
  const ModelFolder mf = golden::model(dir);
  const ParamRegistry reg = mf.registry(Component::UNet);
  const Tensor flat = mf.load(Component::UNet, reg);
  SafetensorsFile f = SafetensorsFile::open(dir + "/forward.safetensors");
  const Tensor sample = golden::nchw_to_nhwc(golden::tensor(f, "unet.sample"));  // [B, h, w, C]
  const Tensor steps = golden::tensor(f, "unet.timesteps");                      // [B] integer
  Tensor t = Tensor::empty({steps.numel()});
  for (int64_t i = 0; i < steps.numel(); ++i)
    t.f32()[i] = steps.dtype() == DType::I64 ? float(steps.data<int64_t>()[i]) : steps.f32()[i];
  const Tensor ehs = golden::tensor(f, "unet.encoder_hidden_states");  // [B, 77, D]
  const Tensor want = golden::nchw_to_nhwc(golden::tensor(f, "unet.out"));
  CpuOps ops;
  Ctx ctx{ops};
  UNet2DConditionModel model(mf.unet, reg, flat);
  const Tensor got = model.forward(ctx, sample, t, ehs);
  EXPECT_EQ(got.shape(), want.shape());
  EXPECT_LT(golden::compare(preset + " unet out", got, want), golden::kRelL2Bound);
}

}  // namespace

TEST(Unet, GoldenSd1Tiny) {
  run_unet("sd1-tiny");
}
TEST(Unet, GoldenSd2Tiny) {
  run_unet("sd2-tiny");
}
TEST(Unet, GoldenExtra) {
  run_unet("extra");
}
