// End-to-end sampling speed of `dreambooth generate` on the CPU reference backend, beside diffusers'
// StableDiffusionPipeline on the same model, steps, guidance, size and batch (bench/generate_torch.py).
//
//   build/bench_generate_cpu [--model tests/golden/sd1-tiny/model] [--images 8] [--steps 20]
//                            [--guidance 7.5] [--batch 1] [--scheduler NAME] [--threads 1]
//                            [--torch /opt/venvs/ref/bin/python]
//
// Times generate_images() (text encoding once, the denoising loop, VAE decode, uint8; no files) after
// one untimed 1-image warm-up, and prints seconds per image and UNet evaluations per second (one
// evaluation = one latent row through the UNet: 2 per image and step with guidance). With --torch PY,
// runs `PY bench/generate_torch.py` with the same settings and prints its line below ours.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/generate.h"

using namespace db;

int main(int argc, char** argv) {
  std::string model = "tests/golden/sd1-tiny/model", scheduler, torch_py;
  int images = 8, steps = 20, batch = 1, threads = 1;
  float guidance = 7.5f;
  for (int i = 1; i < argc; ++i) {
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", argv[i]);
        std::exit(2);
      }
      return argv[++i];
    };
    const std::string a = argv[i];
    if (a == "--model")
      model = next();
    else if (a == "--images")
      images = std::stoi(next());
    else if (a == "--steps")
      steps = std::stoi(next());
    else if (a == "--guidance")
      guidance = std::stof(next());
    else if (a == "--batch")
      batch = std::stoi(next());
    else if (a == "--scheduler")
      scheduler = next();
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--torch")
      torch_py = next();
    else {
      std::fprintf(stderr, "unknown option %s (see the comment at the top of bench/generate_cpu.cpp)\n",
                   a.c_str());
      return 2;
    }
  }
  try {
    omp_set_num_threads(threads);
    auto models = load_generate_models(model);
    GenerateOptions o;
    o.model = model;
    o.prompt = "photo of a dog";
    o.steps = steps;
    o.guidance = guidance;
    o.scheduler = scheduler;
    o.batch_size = batch;
    o.progress = false;
    o.num_images = 1;
    generate_images(*models, o);  // warm-up
    o.num_images = images;
    const auto t0 = std::chrono::steady_clock::now();
    GenerateResult r = generate_images(*models, o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "%-10s %-9s %dx%d %s %d steps g %.1f, %d images, batch %d, %d thread(s): %.4f s/image, %.1f UNet "
        "evals/s\n",
        "dreambooth", "cpu", r.width, r.height, r.scheduler.c_str(), steps, guidance, images, batch, threads,
        s / images, double(r.unet_evals) / s);
    std::fflush(stdout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  if (!torch_py.empty()) {
    const std::string cmd = torch_py + " bench/generate_torch.py --model '" + model + "' --images " +
                            std::to_string(images) + " --steps " + std::to_string(steps) + " --guidance " +
                            std::to_string(guidance) + " --batch " + std::to_string(batch) + " --threads " +
                            std::to_string(threads) + (scheduler.empty() ? "" : " --scheduler " + scheduler);
    return std::system(cmd.c_str()) == 0 ? 0 : 1;
  }
  return 0;
}
