// LoRA DreamBooth steps through CudaOps against the same steps through CpuOps (which match diffusers +
// PEFT: tests/unit/test_lora.cpp, Lora.GoldenStepsMatchPeft): sd1-tiny, rank 4, alpha 8, UNet and
// text-encoder adapters starting from the golden's non-zero A and B, the harness batch, 3 optimizer steps.
// The adapters go through the ops every other step uses (two small linears and a scaled add), so the
// bounds are test_cuda_train.cpp's: F32 mode 1e-5 for losses and norms, 5e-4 for the 3-step adapter
// update; BF16 mode 3e-2 and 0.25. Measured (emulator): F32 losses <= 5.4e-8, norms <= 3.7e-7, update 1.2e-5;
// BF16 losses <= 6.6e-4, norms <= 6.0e-3, update 0.12.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>

#include "../../src/backend/cuda/cuda_ops.h"
#include "../unit/test_helpers.h"
#include "step_compare.h"
#include "../unit/train_harness.h"
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/pipelines/train_step.h"

namespace db {
namespace {

using test::rel;

using test::Golden;
using test::golden_path;

struct LoraRun {
  std::vector<StepResult> steps;
  Tensor p0, p3;  // host f32 adapter masters (UNet then text encoder), before and after
};

Tensor host_adapters(Ops& ops, const TrainState& st) {
  const Tensor u = to_host(ops, st.unet_lora.master), t = to_host(ops, st.te_lora.master);
  Tensor out = Tensor::empty({u.numel() + t.numel()});
  std::memcpy(out.f32(), u.f32(), u.nbytes());
  std::memcpy(out.f32() + u.numel(), t.f32(), t.nbytes());
  return out;
}

void upload_init(Ops& ops, const Golden& g, const std::string& component, ModelBuffers& b) {
  Tensor host = Tensor::zeros({b.reg.total_numel()});
  for (const ParamInfo& p : b.reg.params())
    std::memcpy(host.f32() + p.offset, g["init." + component + p.name].f32(), size_t(p.numel) * 4);
  ops.upload(host.raw(), b.master);
  ops.synchronize();
  b.refresh_working(ops);
}

LoraRun three_steps(Ops& ops) {
  Ctx ctx{ops};
  const Golden tr("sd1-tiny/train.safetensors"), lg("sd1-tiny/lora_train.safetensors");
  const ModelFolder mf = ModelFolder::open(golden_path("sd1-tiny") + "/model");
  TrainState st = TrainState::load(ops, mf, false, false);
  st.enable_lora(ops, LoraOptions{4, 8.f, true}, 0);
  upload_init(ops, lg, "unet.", st.unet_lora);
  upload_init(ops, lg, "text_encoder.", st.te_lora);
  st.bind();
  LoraRun r;
  r.p0 = host_adapters(ops, st);
  const NoiseSchedule sched(mf.scheduler);
  const MicroBatch mb = test::harness_batch(tr);
  const StepOptions opt = test::harness_step_options();
  for (int step = 0; step < 3; ++step) {
    TrainStep ts(ctx, st, sched, opt);
    ts.micro_batch(mb);
    ts.update(step);
    r.steps.push_back(ts.finish());
  }
  r.p3 = host_adapters(ops, st);
  return r;
}

class CudaLora : public ::testing::TestWithParam<DType> {};

TEST_P(CudaLora, ThreeStepsMatchCpu) {
  const bool f32 = GetParam() == DType::F32;
  const double loss_tol = f32 ? 1e-5 : 3e-2, update_tol = f32 ? 5e-4 : 0.25;  // see the file comment
  CpuOps cpu;
  cuda::CudaOps gpu(0);
  gpu.set_activation_dtype(GetParam());
  const LoraRun ref = three_steps(cpu), got = three_steps(gpu);
  for (int s = 0; s < 3; ++s) {
    const StepResult &g = got.steps[size_t(s)], &r = ref.steps[size_t(s)];
    test::print_step_vs_cpu(s, g, r);
    EXPECT_LE(rel(g.loss.loss, r.loss.loss), loss_tol) << "step " << s;
    EXPECT_LE(rel(g.update.grad_norm, r.update.grad_norm), loss_tol) << "step " << s;
    EXPECT_TRUE(g.update.applied);
  }
  double num = 0, den = 0;
  for (int64_t i = 0; i < ref.p0.numel(); ++i) {
    const double da = double(got.p3.f32()[i]) - got.p0.f32()[i],
                 db = double(ref.p3.f32()[i]) - ref.p0.f32()[i];
    num += (da - db) * (da - db), den += db * db;
  }
  std::printf("  3-step adapter update rel L2 error %.2e\n", std::sqrt(num / den));
  EXPECT_LE(std::sqrt(num / den), update_tol);
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CudaLora, ::testing::Values(DType::F32, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

}  // namespace
}  // namespace db
