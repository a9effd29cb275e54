// Vae.*: AutoencoderKL encode (image -> moments after quant_conv) and decode (z
// -> image) against diffusers (golden_util.h: the bound).
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/models/vae.h"
#include "golden_util.h"

using namespace db;

namespace {

void run_vae(const std::string& preset) {
  const std::string dir = golden::preset_dir(preset);
  if (dir.empty())
    GTEST_SKIP() << "no golden folder " << golden::root() << "/" << preset << " (run tests/reference)";
  const ModelFolder mf = golden::model(dir);
  const ParamRegistry reg = mf.registry(Component::Vae);
  const Tensor flat = mf.load(Component::Vae, reg);
  SafetensorsFile f = SafetensorsFile::open(dir + "/forward.safetensors");
  CpuOps ops;
  Ctx ctx{ops};
  AutoencoderKL model(mf.vae, reg, flat);

  const Tensor image = golden::nchw_to_nhwc(golden::tensor(f, "vae.image"));  // [B, H, W, 3]
  const Tensor moments_want = golden::nchw_to_nhwc(golden::tensor(f, "vae.moments"));
  const Tensor moments = model.encode(ctx, image);  // [B, h, w, 2*latent]
  EXPECT_EQ(moments.shape(), moments_want.shape());
  EXPECT_LT(golden::compare(preset + " vae moments", moments, moments_want), golden::kRelL2Bound);

  const Tensor z = golden::nchw_to_nhwc(golden::tensor(f, "vae.z"));  // [B, h, w, latent]
  const Tensor decoded_want = golden::nchw_to_nhwc(golden::tensor(f, "vae.decoded"));
  const Tensor decoded = model.decode(ctx, z);  // [B, H, W, 3]
  EXPECT_EQ(decoded.shape(), decoded_want.shape());
  EXPECT_LT(golden::compare(preset + " vae decoded", decoded, decoded_want), golden::kRelL2Bound);
}

}  // namespace

TEST(Vae, GoldenSd1Tiny) {
  run_vae("sd1-tiny");
}
TEST(Vae, GoldenSd2Tiny) {
  run_vae("sd2-tiny");
}
TEST(Vae, GoldenExtra) {
  run_vae("extra");
}
