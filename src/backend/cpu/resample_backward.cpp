// CPU nearest 2x upsample backward and embedding backward.
#include <algorithm>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

// dy [B, 2H, 2W, C] -> dx [B, H, W, C]
void CpuOps::upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) {
  const int64_t B = dx.dim(0), H = dx.dim(1), W = dx.dim(2), C = dx.dim(3);
  DB_CHECK(dy.shape() == (Shape{B, 2 * H, 2 * W, C}), "upsample_backward: dy ", dy.desc(), " for dx ",
           dx.desc());
  const float* dyp = dy.f32();
  float* dxp = dx.f32();
#pragma omp parallel for collapse(2) schedule(static) if (dx.numel() >= kCpuParallelMinWork)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const float* r0 = dyp + ((b * 2 * H + 2 * h) * 2 * W + 2 * w) * C;  // dy[b, 2h, 2w]
        const float* r1 = r0 + 2 * W * C;                                   // dy[b, 2h + 1, 2w]
        float* o = dxp + ((b * H + h) * W + w) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = (r0[c] + r0[C + c]) + (r1[c] + r1[C + c]);
      }
}

// ids [n] (I32/I64), dy [n, C] -> dtable [V, C] +=. Parallel over column blocks; ids in order.
void CpuOps::embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  const int64_t n = ids.numel(), V = dtable.dim(0), C = dtable.dim(1);
  DB_CHECK(dy.numel() == n * C, "embedding_backward: dy ", dy.desc(), " for ", n, " ids of width ", C);
  DB_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64,
           "embedding_backward: ids must be i32/i64, got ", ids.desc());
  auto id_at = [&](int64_t i) -> int64_t {
    return ids.dtype() == DType::I32 ? ids.data<int32_t>()[i] : ids.data<int64_t>()[i];
  };
  for (int64_t i = 0; i < n; ++i)
    DB_CHECK(id_at(i) >= 0 && id_at(i) < V, "embedding_backward: id ", id_at(i), " at position ", i,
             " outside [0, ", V, ")");
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  const float* dyp = dy.f32();
  float* tp = dtable.f32();
#pragma omp parallel for schedule(static) if (n * C >= kCpuParallelMinWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, cb = std::min(kBlock, C - c0);
    for (int64_t i = 0; i < n; ++i) {
      float* row = tp + id_at(i) * C + c0;
      const float* src = dyp + i * C + c0;
      for (int64_t c = 0; c < cb; ++c) row[c] += src[c];
    }
  }
}

}  // namespace db
