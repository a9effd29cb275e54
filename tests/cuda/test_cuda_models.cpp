// The three models' forwards through CudaOps against diffusers/transformers (the same goldens as
// tests/unit/test_forward_golden.cpp), every golden preset:
//   UNet   UNet2DConditionModel(sample, per-sample timesteps, encoder states) -> sample (batch 2)
//   Clip   CLIPTextModel(ids) -> last_hidden_state (causal attention, the position table)
//   Vae    AutoencoderKL encode (image -> moments; the asymmetric pad before stride-2 convs) and decode
// Bounds (relative L2 over the output):
//   F32 mode: kForwardRelL2 = 5e-6, the CPU's own bound (test_helpers.h): CudaOps in f32 differs from
//     the CPU only in summation orders, and the bound already catches an eps of 1e-5 instead of 1e-6.
//     Measured <= 1.3e-6 (VAE decode), <= 7.6e-7 (UNet), <= 2.4e-7 (CLIP).
//   BF16 mode: 5e-2. Every activation is rounded to bf16 (2^-9 relative) and the error compounds over
//     the layers; measured on these presets <= 8.6e-3 (CLIP), <= 1.6e-2 (UNet), <= 2.5e-2 (VAE decode of
//     the "extra" preset, the deepest). Structural bugs (a missing residual, a wrong head split, a swapped
//     GEGLU half) give >= 1e-1.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "../../src/backend/cuda/cuda_ops.h"
#include "../unit/test_helpers.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/models/vae.h"

namespace db {
namespace {

using test::expect_close;
using test::Golden;
using test::nchw_to_nhwc;

class CudaModels : public ::testing::TestWithParam<std::tuple<std::string, DType>> {
 protected:
  cuda::CudaOps ops{0};
  Ctx ctx{ops};
  void SetUp() override { ops.set_activation_dtype(act()); }
  DType act() const { return std::get<1>(GetParam()); }
  double bound() const { return act() == DType::F32 ? test::kForwardRelL2 : 5e-2; }
  Tensor dev(const Tensor& host) { return to_backend(ops, host, act()); }
  Tensor back(const Tensor& t) { return to_host(ops, t, DType::F32); }
  void check(const std::string& what, const Tensor& got, const Tensor& ref) {
    const test::Diff d = expect_close(what, got, ref, bound());
    std::printf("  %-32s rel L2 %.2e\n", what.c_str(), d.rel_l2);
  }
  Tensor params(const ModelFolder& mf, Component c, const ParamRegistry& reg) { return dev(mf.load(c, reg)); }
};

TEST_P(CudaModels, ForwardsMatchDiffusers) {
  const std::string preset = std::get<0>(GetParam());
  const std::string tag = preset + " (" + dtype_name(act()) + ")";
  const ModelFolder mf = ModelFolder::open(test::golden_path(preset + "/model"));
  const Golden f(preset + "/forward.safetensors");
  {
    const ParamRegistry reg = mf.registry(Component::TextEncoder);
    const Tensor flat = params(mf, Component::TextEncoder, reg);
    ClipTextModel model(mf.text_encoder, reg, flat);
    const Tensor ids = to_backend(ops, f["text.input_ids"]);
    check(tag + " text_encoder", back(model.forward(ctx, ids)), f["text.last_hidden_state"]);
  }
  {
    const ParamRegistry reg = mf.registry(Component::UNet);
    const Tensor flat = params(mf, Component::UNet, reg);
    UNet2DConditionModel model(mf.unet, reg, flat);
    const Tensor steps = f["unet.timesteps"];
    Tensor t = Tensor::empty({steps.numel()});
    for (int64_t i = 0; i < steps.numel(); ++i) t.f32()[i] = float(steps.data<int64_t>()[i]);
    const Tensor out = model.forward(ctx, dev(nchw_to_nhwc(f["unet.sample"])), to_backend(ops, t),
                                     dev(f["unet.encoder_hidden_states"]));
    check(tag + " unet", back(out), nchw_to_nhwc(f["unet.out"]));
  }
  {
    const ParamRegistry reg = mf.registry(Component::Vae);
    const Tensor flat = params(mf, Component::Vae, reg);
    AutoencoderKL model(mf.vae, reg, flat);
    const Tensor moments = model.encode(ctx, dev(nchw_to_nhwc(f["vae.image"])));
    check(tag + " vae moments", back(moments), nchw_to_nhwc(f["vae.moments"]));
    const Tensor decoded = model.decode(ctx, dev(nchw_to_nhwc(f["vae.z"])));
    check(tag + " vae decoded", back(decoded), nchw_to_nhwc(f["vae.decoded"]));
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, CudaModels,
                         ::testing::Combine(::testing::ValuesIn(test::golden_presets()),
                                            ::testing::Values(DType::F32, DType::BF16)),
                         [](const auto& info) {
                           return test::param_name(std::get<0>(info.param)) + "_" +
                                  dtype_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace db
