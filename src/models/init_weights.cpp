#include "dreambooth/models/init_weights.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"

namespace db {
namespace {

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// PhiloxStream::normal(first + i) for i in [0, n), one Philox block per four elements (the same
// Box-Muller arithmetic in double, so the same bits). `first` must be a multiple of 4.
void fast_normals(uint64_t seed, uint32_t step, uint32_t stream, float* out, uint64_t n, uint64_t first,
                  float scale) {
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  constexpr double k2pi = 2.0 * M_PI, inv = 1.0 / 4294967296.0;
  for (uint64_t i = 0; i < n; i += 4) {
    const uint64_t e = first + i;
    PhiloxBlock b = philox4x32_10({uint32_t(e / 4), stream, step, uint32_t(RngPurpose::Init)}, key);
    float v[4];
    for (int p = 0; p < 2; ++p) {
      double u1 = (double(b[2 * p]) + 0.5) * inv, u2 = (double(b[2 * p + 1]) + 0.5) * inv;
      double r = std::sqrt(-2.0 * std::log(u1)), theta = k2pi * u2;
      v[2 * p] = float(r * std::cos(theta));
      v[2 * p + 1] = float(r * std::sin(theta));
    }
    for (uint64_t j = 0; j < 4 && i + j < n; ++j) out[i + j] = v[j] * scale;
  }
}

}  // namespace

float init_std(const ParamInfo& p) {
  if (ends_with(p.name, ".bias") || p.torch_shape.size() == 1) return 0.f;
  if (ends_with(p.name, "embedding.weight")) return 0.02f;
  int64_t fan_in = 1;
  for (size_t d = 1; d < p.torch_shape.size(); ++d) fan_in *= p.torch_shape[d];
  return float(1.0 / std::sqrt(3.0 * double(fan_in)));
}

void init_weights(const ParamRegistry& reg, const Tensor& flat, uint64_t seed, uint32_t stream) {
  DB_CHECK(flat.numel() >= reg.total_numel(), "init_weights: buffer ", flat.desc(),
           " smaller than the registry (", reg.total_numel(), " elements)");
  float* base = flat.f32();
  const auto& params = reg.params();
  // Work items: (parameter, chunk) so that one huge tensor still spreads over every thread.
  constexpr int64_t kChunk = 1 << 16;  // a multiple of 4
  struct Item {
    size_t param;
    int64_t begin, end;
  };
  std::vector<Item> items;
  for (size_t i = 0; i < params.size(); ++i)
    for (int64_t b = 0; b < params[i].numel; b += kChunk)
      items.push_back({i, b, std::min(params[i].numel, b + kChunk)});
#pragma omp parallel
  {
    std::vector<float> tmp;
#pragma omp for schedule(dynamic, 4)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& w = items[it];
      const ParamInfo& p = params[w.param];
      float* dst = base + p.offset;
      const float std_ = init_std(p);
      if (std_ == 0.f) {
        const float v = (p.torch_shape.size() == 1 && !ends_with(p.name, ".bias")) ? 1.f : 0.f;
        for (int64_t k = w.begin; k < w.end; ++k) dst[k] = v;
      } else if (!p.is_conv()) {
        fast_normals(seed, uint32_t(w.param), stream, dst + w.begin, uint64_t(w.end - w.begin),
                     uint64_t(w.begin), std_);
      } else {
        // Draw in PyTorch order [O, I, kh, kw], store as [O, kh, kw, I].
        const Shape& s = p.torch_shape;
        const int64_t I = s[1], K = s[2] * s[3];
        tmp.resize(size_t(w.end - w.begin));
        fast_normals(seed, uint32_t(w.param), stream, tmp.data(), tmp.size(), uint64_t(w.begin), std_);
        for (int64_t t = w.begin; t < w.end; ++t) {
          const int64_t o = t / (I * K), i = (t / K) % I, k = t % K;
          dst[(o * K + k) * I + i] = tmp[size_t(t - w.begin)];
        }
      }
    }
  }
  // Alignment padding between parameters.
  for (size_t i = 0; i < params.size(); ++i) {
    int64_t end = params[i].offset + params[i].numel;
    int64_t next = i + 1 < params.size() ? params[i + 1].offset : reg.total_numel();
    for (int64_t k = end; k < next; ++k) base[k] = 0.f;
  }
}

Tensor init_weights(const ParamRegistry& reg, uint64_t seed, uint32_t stream) {
  Tensor flat = Tensor::empty({reg.total_numel()});
  init_weights(reg, flat, seed, stream);
  return flat;
}

}  // namespace db
