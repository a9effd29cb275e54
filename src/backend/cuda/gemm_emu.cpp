// Gemm in the emulated build (the stand-in for cuBLASLt, which needs a GPU): the CPU reference GEMM on
// host copies of the emulated device memory, inputs and output converted through f32 exactly as the
// dtypes say (bf16 -> f32 -> accumulate in f32 -> bf16), so CudaOps and everything above it run in CI.
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "gemm.h"
#include "host_staging.h"

namespace db::cuda {
namespace {

// The row-major [rows, cols] matrix op(X) from X stored [rows, cols] (or [cols, rows] when trans).
Tensor materialise(const Tensor& stored, int64_t rows, int64_t cols, bool trans) {
  if (!trans) return stored.view({rows, cols});
  Tensor out = Tensor::empty({rows, cols});
  const float* s = stored.f32();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out.f32()[r * cols + c] = s[c * rows + r];
  return out;
}

class EmulatedGemm final : public Gemm {
 public:
  explicit EmulatedGemm(cudaStream_t stream) : stream_(stream) {}
  void run(const GemmArgs& g) override {
    if (g.m == 0 || g.n == 0) return;
    const Shape a_shape = g.trans_a ? Shape{g.k, g.m} : Shape{g.m, g.k};
    const Shape b_shape = g.trans_b ? Shape{g.n, g.k} : Shape{g.k, g.n};
    const Tensor a = materialise(download_f32(g.a, g.ab_type, a_shape, stream_), g.m, g.k, g.trans_a);
    // cpu_gemm_nt takes B as [N, K]: that is B itself when trans_b, else B^T.
    const Tensor bt = materialise(download_f32(g.b, g.ab_type, b_shape, stream_), g.n, g.k, !g.trans_b);
    Tensor c = g.beta != 0.f ? download_f32(g.c, g.c_type, {g.m, g.n}, stream_) : Tensor::zeros({g.m, g.n});
    cpu_gemm_nt(int(g.m), int(g.n), int(g.k), g.alpha, a.f32(), int(g.k), bt.f32(), int(g.k), g.beta, c.f32(),
                int(g.n));
    if (g.bias) {
      const Tensor bias = download_f32(g.bias, g.c_type, {g.n}, stream_);
      for (int64_t i = 0; i < g.m; ++i)
        for (int64_t j = 0; j < g.n; ++j) c.f32()[i * g.n + j] += bias.f32()[j];
    }
    upload_from_f32(c, g.c_type, g.c, stream_);
  }

 private:
  cudaStream_t stream_;
};

}  // namespace

std::unique_ptr<Gemm> make_gemm(int device, cudaStream_t stream, DeviceAllocator& alloc) {
  return std::make_unique<EmulatedGemm>(stream);
}

}  // namespace db::cuda
