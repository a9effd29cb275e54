// Full DreamBooth training steps at a preset (sd15 by default), random weights, one instance and one
// class sample at 512x512 (64x64 latents), UNet and text encoder trained, prior preservation, AdamW,
// clipping: what `train` runs per step, minus data loading (the batch is in host memory).
//
//   build/bench_step [--preset sd15] [--resolution 512] [--device auto|cpu|cuda] [--steps 5] [--warmup 2]
//                    [--gradient-checkpointing] [--count-only] [--json FILE]
//
// Prints: the model FLOPs of one step, counted from the layer shapes by CountingOps (a shape-only pass,
// no memory, no math: counting_ops.h says what is counted); the step time (mean and best of --steps
// after --warmup), samples/s, achieved TFLOP/s (model FLOPs / time), the backend's measured GEMM peak
// (a square GEMM through the same backend in its activation dtype: cuBLASLt bf16 on a GPU), MFU =
// achieved / peak, and the backend's peak memory during a step. --count-only stops after the count
// (any machine, < 1 s). The PyTorch counterpart is bench/step_torch.py.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "counting_ops.h"
#include "dreambooth/backend/device.h"
#include "dreambooth/core/error.h"
#include "dreambooth/diffusion/noise_schedule.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/init_weights.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/models/registry.h"
#include "dreambooth/pipelines/train_step.h"

using namespace db;
using db::bench::CountingOps;
using db::bench::FlopCount;

namespace {

struct Options {
  std::string preset = "sd15", device = "auto", json;
  int resolution = 512, steps = 5, warmup = 2;
  bool checkpointing = false, count_only = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      DB_CHECK(i + 1 < argc, "bench_step: ", k, " needs a value");
      return argv[++i];
    };
    if (k == "--preset")
      o.preset = value();
    else if (k == "--device")
      o.device = value();
    else if (k == "--resolution")
      o.resolution = std::stoi(value());
    else if (k == "--steps")
      o.steps = std::stoi(value());
    else if (k == "--warmup")
      o.warmup = std::stoi(value());
    else if (k == "--json")
      o.json = value();
    else if (k == "--gradient-checkpointing")
      o.checkpointing = true;
    else if (k == "--count-only")
      o.count_only = true;
    else if (k == "--help" || k == "-h") {
      std::printf(
          "usage: bench_step [--preset sd15] [--resolution 512] [--device auto|cpu|cuda] [--steps 5]\n"
          "                  [--warmup 2] [--gradient-checkpointing] [--count-only] [--json FILE]\n");
      std::exit(0);
    } else
      throw Error("bench_step: unknown option ", k, " (--help lists them)");
  }
  DB_CHECK(o.steps >= 1 && o.warmup >= 0 && o.resolution % 64 == 0,
           "bench_step: bad --steps/--warmup/--resolution");
  return o;
}

struct Model {
  UNetConfig uc;
  ClipTextConfig tc;
  ParamRegistry ureg, treg;
  NoiseSchedule sched;
};

Model load_preset(const std::string& name) {
  const nlohmann::json j = preset(name);
  Model m{parse_unet_config(j.at("unet"), name + ":unet"),
          parse_clip_text_config(j.at("text_encoder"), name + ":text_encoder"),
          {},
          {},
          NoiseSchedule(parse_scheduler_config(j.at("scheduler"), name + ":scheduler"))};
  m.ureg = build_unet_registry(m.uc);
  m.treg = build_clip_text_registry(m.tc);
  return m;
}

// One instance + one class sample; latents at resolution / 8, random (counter-based) values.
MicroBatch batch(const Model& m, int resolution) {
  const int64_t h = resolution / 8, C = m.uc.in_channels;
  MicroBatch mb;
  mb.latents = Tensor::empty({2, h, h, C});
  mb.noise = Tensor::empty({2, h, h, C});
  for (int64_t i = 0; i < mb.latents.numel(); ++i) {
    mb.latents.f32()[i] = float((i * 7919) % 2001) / 1000.f - 1.f;
    mb.noise.f32()[i] = float((i * 104729) % 2001) / 1000.f - 1.f;
  }
  mb.timesteps = {417, 802};
  mb.ids = Tensor::empty({2, 77}, DType::I64);
  for (int64_t i = 0; i < 154; ++i) mb.ids.data<int64_t>()[i] = (i * 31) % (m.tc.vocab_size - 1);
  mb.pairs = 1;
  mb.prior = true;
  return mb;
}

StepOptions step_options(bool checkpointing) {
  StepOptions so;
  so.lr = make_lr_schedule("constant", 5e-6f, 0, 1000);
  so.adam = AdamWConfig{};
  so.gradient_checkpointing = checkpointing;
  return so;
}

StepResult one_step(Ops& ops, TrainState& st, const Model& m, const MicroBatch& mb, bool ckpt, int64_t step) {
  Ctx ctx{ops};
  TrainStep ts(ctx, st, m.sched, step_options(ckpt));
  ts.micro_batch(mb);
  ts.update(step);
  return ts.finish();
}

FlopCount count(const Model& m, const MicroBatch& mb, bool ckpt, DType act) {
  CountingOps c(nullptr, act);
  // Host parameters are never read in a shape-only pass: uninitialised (untouched pages).
  TrainState st = TrainState::from(c, m.uc, m.ureg, Tensor::empty({m.ureg.total_numel()}), m.tc, m.treg,
                                   Tensor::empty({m.treg.total_numel()}), true);
  one_step(c, st, m, mb, ckpt, 0);
  return c.flops;
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Peak of a square GEMM y[n, n] = x[n, n] w[n, n]^T through the backend (its activation dtype).
double gemm_peak_tflops(Ops& ops, int n, int reps) {
  const DType t = ops.activation_dtype();
  Tensor x = ops.empty({n, n}, t), w = ops.empty({n, n}, t), y = ops.empty({n, n}, t);
  ops.fill(x, 0.01f);
  ops.fill(w, 0.02f);
  ops.linear_forward(x, w, Tensor(), y);  // warm-up (plan, workspace)
  ops.synchronize();
  const double t0 = now();
  for (int r = 0; r < reps; ++r) ops.linear_forward(x, w, Tensor(), y);
  ops.synchronize();
  return 2.0 * double(n) * n * n * reps / (now() - t0) / 1e12;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const Model m = load_preset(o.preset);
  const MicroBatch mb = batch(m, o.resolution);
  const FlopCount f = count(m, mb, false, DType::BF16), fc = count(m, mb, true, DType::BF16);
  std::printf("bench_step: %s at %dx%d, batch 1 instance + 1 class sample, UNet + text encoder trained\n",
              o.preset.c_str(), o.resolution, o.resolution);
  std::printf(
      "model FLOPs per step: %.3f TFLOP (linear %.3f, conv %.3f, attention %.3f); "
      "with --gradient-checkpointing executed %.3f (+ flash-attention recompute %.3f)\n",
      f.model() / 1e12, f.linear / 1e12, f.conv / 1e12, f.attention / 1e12, fc.model() / 1e12,
      f.recompute / 1e12);
  nlohmann::json out = {{"preset", o.preset},
                        {"resolution", o.resolution},
                        {"model_tflop_per_step", f.model() / 1e12},
                        {"executed_tflop_per_step_checkpointing", fc.model() / 1e12}};
  if (!o.count_only) {
    std::unique_ptr<Ops> ops = make_ops(o.device);
    std::printf("backend: %s (%s activations); drawing random weights...\n", ops->name(),
                dtype_name(ops->activation_dtype()));
    std::fflush(stdout);
    TrainState st = TrainState::from(*ops, m.uc, m.ureg, init_weights(m.ureg, 0, 0), m.tc, m.treg,
                                     init_weights(m.treg, 0, 1), true);
    for (int i = 0; i < o.warmup; ++i) one_step(*ops, st, m, mb, o.checkpointing, i);
    ops->reset_peak_memory();
    double total = 0, best = 1e30;
    for (int i = 0; i < o.steps; ++i) {
      const double t0 = now();
      const StepResult r = one_step(*ops, st, m, mb, o.checkpointing, o.warmup + i);
      const double dt = now() - t0;
      total += dt, best = std::min(best, dt);
      std::printf("  step %d: %.4f s  loss %.5f  grad_norm %.4f\n", i + 1, dt, r.loss.loss,
                  r.update.grad_norm);
      std::fflush(stdout);
    }
    const MemoryStats mem = ops->memory_stats();
    const double mean = total / o.steps, achieved = f.model() / mean / 1e12;
    const double peak = gemm_peak_tflops(*ops, ops->device() == Device::CPU ? 2048 : 8192, 10);
    std::printf("step time %.4f s mean, %.4f s best (%d steps after %d warm-up)%s\n", mean, best, o.steps,
                o.warmup, o.checkpointing ? ", gradient checkpointing" : "");
    std::printf(
        "samples/s %.3f   achieved %.2f TFLOP/s (model FLOPs)   GEMM peak %.2f TFLOP/s (%s)   MFU %.1f%%\n",
        2.0 / mean, achieved, peak, dtype_name(ops->activation_dtype()), 100.0 * achieved / peak);
    std::printf("peak backend memory during a step: %.1f MiB (reserved %.1f MiB)\n",
                double(mem.peak) / (1 << 20), double(mem.reserved) / (1 << 20));
    out.update({{"backend", ops->name()},
                {"activation_dtype", dtype_name(ops->activation_dtype())},
                {"gradient_checkpointing", o.checkpointing},
                {"step_time_s_mean", mean},
                {"step_time_s_best", best},
                {"samples_per_s", 2.0 / mean},
                {"achieved_tflops", achieved},
                {"gemm_peak_tflops", peak},
                {"mfu", achieved / peak},
                {"peak_mem_mib", double(mem.peak) / (1 << 20)},
                {"reserved_mem_mib", double(mem.reserved) / (1 << 20)}});
  }
  if (!o.json.empty()) std::ofstream(o.json) << out.dump() << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_step: %s\n", e.what());
  return 1;
}
