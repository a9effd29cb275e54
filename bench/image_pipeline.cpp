// images/s for the prepare image path: read file -> decode -> EXIF transpose -> resize -> center crop
// -> normalise to float [-1, 1]. Compare with bench/image_pipeline_pil.py (Pillow, same steps).
//
//   build/bench_image_pipeline [DATA_DIR] [RESOLUTION] [REPEATS]
//   DATA_DIR defaults to $DREAMBOOTH_SHARED_DATA or ../shared/data/dreambooth; every *.jpg/*.png below it.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/image_transform.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  try {
    std::string dir = argc > 1                                ? argv[1]
                      : std::getenv("DREAMBOOTH_SHARED_DATA") ? std::getenv("DREAMBOOTH_SHARED_DATA")
                                                              : "../shared/data/dreambooth";
    const int res = argc > 2 ? std::atoi(argv[2]) : 512;
    const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
    std::vector<std::string> files;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      std::string ext = e.path().extension().string();
      std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
      if (e.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png"))
        files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    DB_CHECK(!files.empty(), "no images under ", dir);
    double mpix = 0;
    for (const auto& f : files) {
      db::Image im = db::read_image(f);
      mpix += double(im.width) * im.height / 1e6;
    }
    std::printf("%zu images under %s, %.1f MP in all, resolution %d, best of %d\n", files.size(), dir.c_str(),
                mpix, res, repeats);
    std::printf("%-28s %10s %10s %10s %10s\n", "ours (threads)", "images/s", "decode ms", "resize ms",
                "norm ms");
    for (int threads : {1, omp_get_max_threads()}) {
      double best = 1e30, dec_ms = 0, rs_ms = 0, norm_ms = 0;
      for (int r = 0; r < repeats; ++r) {
        double t_dec = 0, t_rs = 0, t_norm = 0;
        auto t0 = Clock::now();
#pragma omp parallel for num_threads(threads) schedule(dynamic) reduction(+ : t_dec, t_rs, t_norm)
        for (size_t i = 0; i < files.size(); ++i) {
          auto a = Clock::now();
          db::Image im = db::read_image(files[i]);
          auto b = Clock::now();
          db::Image out = db::resize_and_crop(im, res, db::CropMode::Center);
          auto c = Clock::now();
          std::vector<float> x(out.pixels.size());
          db::normalize_to_unit_range(out, x.data());
          auto d = Clock::now();
          t_dec += std::chrono::duration<double, std::milli>(b - a).count();
          t_rs += std::chrono::duration<double, std::milli>(c - b).count();
          t_norm += std::chrono::duration<double, std::milli>(d - c).count();
        }
        double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (s < best) best = s, dec_ms = t_dec, rs_ms = t_rs, norm_ms = t_norm;
      }
      const double n = double(files.size());
      std::printf("%-28s %10.1f %10.2f %10.2f %10.2f\n",
                  ("decode+resize+crop x" + std::to_string(threads)).c_str(), n / best, dec_ms / n, rs_ms / n,
                  norm_ms / n);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
