// Clip.*: CLIPTextModel forward against transformers' last_hidden_state
// (golden_util.h: the bound).
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/models/clip_text.h"
#include "golden_util.h"

using namespace db;

namespace {

void run_clip(const std::string& preset) {
  const std::string dir = golden::preset_dir(preset);
  if (dir.empty())
    GTEST_SKIP() << "no golden folder " << golden::root() << "/" << preset << " (run tests/reference)";
  const ModelFolder mf = golden::model(dir);
  const ParamRegistry reg = mf.registry(Component::TextEncoder);
  const Tensor flat = mf.load(Component::TextEncoder, reg);
  SafetensorsFile f = SafetensorsFile::open(dir + "/forward.safetensors");
  const Tensor ids = golden::tensor(f, "text.input_ids");  // [B, 77]
  const Tensor want = golden::tensor(f, "text.last_hidden_state");
  CpuOps ops;
  Ctx ctx{ops};
  ClipTextModel model(mf.text_encoder, reg, flat);
  const Tensor got = model.forward(ctx, ids);  // [B, 77, H]
  EXPECT_EQ(got.shape(), want.shape());
  EXPECT_LT(golden::compare(preset + " text_encoder last_hidden_state", got, want), golden::kRelL2Bound);
}

}  // namespace

TEST(Clip, GoldenSd1Tiny) {
  run_clip("sd1-tiny");
}
TEST(Clip, GoldenSd2Tiny) {
  run_clip("sd2-tiny");
}
TEST(Clip, GoldenExtra) {
  run_clip("extra");
}
