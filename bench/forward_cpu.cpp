// Forward-pass timing of the CPU reference backend at a preset, with random weights drawn in-process
// by init_weights (what init-model writes: PyTorch-default variance, norms 1, biases 0).
//
//   build/bench_forward_cpu [--preset sd15] [--model clip|unet|vae-encode|vae-decode|all]
//                           [--reps N] [--latent 64] [--image 512] [--batch 1]
//
// Presets are the embedded ones (sd1-tiny, sd2-tiny, sd15, sd21). Prints one line per model:
// seconds per forward (best of reps, after one untimed warm-up when reps > 1) and the process's
// peak RSS so far; run one model per process for a per-model peak.
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>
#include <omp.h>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/init_weights.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/models/registry.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/models/vae.h"

using namespace db;

namespace {

double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is KiB on Linux
}

// Counter-based uniform in [-1, 1) for the inputs: the same for any thread count.
float uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + i * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(z >> 40) / float(1 << 23) - 1.f;
}

template <typename F>
double time_best(int reps, F&& f) {
  if (reps > 1) f();  // warm-up
  double best = 1e30;
  for (int r = 0; r < std::max(reps, 1); ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

void report(const std::string& preset, const std::string& model, const std::string& shape, double s) {
  std::printf("%-10s %-11s %-26s %9.4f s  peak RSS %6.2f GiB  threads %d\n", preset.c_str(), model.c_str(),
              shape.c_str(), s, peak_rss_gib(), omp_get_max_threads());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) try {
  std::string preset = "sd15", model = "all";
  int reps = 1, latent = 64, image = 512, batch = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--preset")
      preset = v;
    else if (k == "--model")
      model = v;
    else if (k == "--reps")
      reps = std::stoi(v);
    else if (k == "--latent")
      latent = std::stoi(v);
    else if (k == "--image")
      image = std::stoi(v);
    else if (k == "--batch")
      batch = std::stoi(v);
    else
      throw Error("unknown option ", k);
  }
  const nlohmann::json j = db::preset(preset);
  CpuOps ops;
  Ctx ctx{ops};
  const bool all = model == "all";

  if (all || model == "clip") {
    const ClipTextConfig cfg = parse_clip_text_config(j.at("text_encoder"), preset + ":text_encoder");
    const ParamRegistry reg = build_clip_text_registry(cfg);
    const Tensor flat = init_weights(reg, 0, 1);
    ClipTextModel m(cfg, reg, flat);
    Tensor ids = Tensor::empty({batch, 77}, DType::I64);
    for (int64_t i = 0; i < ids.numel(); ++i) ids.data<int64_t>()[i] = (i * 7919) % cfg.vocab_size;
    const double s = time_best(reps, [&] { m.forward(ctx, ids); });
    report(preset, "clip", "ids [" + std::to_string(batch) + ", 77]", s);
  }
  if (all || model == "unet") {
    const UNetConfig cfg = parse_unet_config(j.at("unet"), preset + ":unet");
    const ParamRegistry reg = build_unet_registry(cfg);
    const Tensor flat = init_weights(reg, 0, 0);
    UNet2DConditionModel m(cfg, reg, flat);
    Tensor x = Tensor::empty({batch, latent, latent, cfg.in_channels});
    for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = uniform(3, uint64_t(i));
    Tensor t = Tensor::empty({batch});
    t.fill(500.f);
    Tensor ehs = Tensor::empty({batch, 77, cfg.cross_attention_dim});
    for (int64_t i = 0; i < ehs.numel(); ++i) ehs.f32()[i] = uniform(4, uint64_t(i));
    const double s = time_best(reps, [&] { m.forward(ctx, x, t, ehs); });
    report(preset, "unet", "latents " + std::to_string(latent) + "x" + std::to_string(latent), s);
  }
  if (all || model == "vae-encode" || model == "vae-decode") {
    const VaeConfig cfg = parse_vae_config(j.at("vae"), preset + ":vae");
    const ParamRegistry reg = build_vae_registry(cfg);
    const Tensor flat = init_weights(reg, 0, 2);
    AutoencoderKL m(cfg, reg, flat);
    const std::string sz = std::to_string(image) + "x" + std::to_string(image);
    if (all || model == "vae-encode") {
      Tensor img = Tensor::empty({batch, image, image, cfg.in_channels});
      for (int64_t i = 0; i < img.numel(); ++i) img.f32()[i] = uniform(6, uint64_t(i));
      const double s = time_best(reps, [&] { m.encode(ctx, img); });
      report(preset, "vae-encode", "image " + sz, s);
    }
    if (all || model == "vae-decode") {
      const int h = image / cfg.downscale_factor();
      Tensor z = Tensor::empty({batch, h, h, cfg.latent_channels});
      for (int64_t i = 0; i < z.numel(); ++i) z.f32()[i] = uniform(7, uint64_t(i));
      const double s = time_best(reps, [&] { m.decode(ctx, z); });
      report(preset, "vae-decode", "image " + sz, s);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
