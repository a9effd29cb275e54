// CPU nearest 2x upsample, sinusoidal timestep embedding, embedding lookup.
#include <cmath>
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

// x [B, H, W, C] -> y [B, 2H, 2W, C]
void CpuOps::upsample_nearest2x_forward(const Tensor& x, Tensor& y) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
  DB_CHECK(y.shape() == (Shape{B, 2 * H, 2 * W, C}), "upsample: output ", y.desc(), " for ", x.desc());
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oh = 0; oh < 2 * H; ++oh)
      for (int64_t ow = 0; ow < 2 * W; ++ow)
        std::memcpy(yp + ((b * 2 * H + oh) * 2 * W + ow) * C, xp + ((b * H + oh / 2) * W + ow / 2) * C,
                    size_t(C) * sizeof(float));
}

// t [B] -> y [B, dim]. Float arithmetic in the order of diffusers' get_timestep_embedding.
void CpuOps::timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) {
  const int64_t B = t.numel(), dim = y.dim(-1), half = dim / 2;
  DB_CHECK(y.numel() == B * dim, "timestep_embedding: output ", y.desc(), " for ", B, " timesteps");
  const float log_period = float(-std::log(double(p.max_period)));
  const float denom = float(half) - p.downscale_freq_shift;
  for (int64_t b = 0; b < B; ++b) {
    const float tb = t.f32()[b];
    float* yr = y.f32() + b * dim;
    for (int64_t i = 0; i < half; ++i) {
      const float freq = std::exp(log_period * float(i) / denom);
      const float arg = p.scale * (tb * freq);
      const float s = std::sin(arg), c = std::cos(arg);
      yr[i] = p.flip_sin_to_cos ? c : s;
      yr[half + i] = p.flip_sin_to_cos ? s : c;
    }
    if (dim % 2) yr[dim - 1] = 0.f;
  }
}

// ids [...] (I32/I64), table [V, C] -> y [..., C]
void CpuOps::embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) {
  const int64_t n = ids.numel(), V = table.dim(0), C = table.dim(1);
  DB_CHECK(y.numel() == n * C, "embedding: output ", y.desc(), " for ", n, " ids of width ", C);
  DB_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, "embedding: ids must be i32/i64, got ",
           ids.desc());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids.dtype() == DType::I32 ? ids.data<int32_t>()[i] : ids.data<int64_t>()[i];
    DB_CHECK(id >= 0 && id < V, "embedding: id ", id, " at position ", i, " outside [0, ", V, ")");
    std::memcpy(y.f32() + i * C, table.f32() + id * C, size_t(C) * sizeof(float));
  }
}

}  // namespace db
