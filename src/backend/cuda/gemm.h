#pragma once
// Gemm: the CUDA backend's matrix products behind a thin interface (issue 14). The GPU build runs
// cuBLASLt (gemm_cublaslt.cpp); the emulated build runs the CPU reference on the emulated device memory
// (gemm_emu.cpp: bf16 -> f32 -> bf16), so everything above this interface is exercised in CI.
//
// Row-major, as the rest of the project: C[M, N] = alpha * op(A) op(B) + beta * C, with
//   A stored [M, K] (or [K, M] when trans_a), B stored [K, N] (or [N, K] when trans_b),
//   an optional bias [N] added to every row (epilogue; dtype of C), and no other epilogue.
// A and B share one element type (BF16 on a GPU, F32 for checks); C is BF16 or F32 (parameter gradients
// accumulate into F32 with beta = 1). Compute and accumulation are f32.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "dreambooth/core/dtype.h"

namespace db::cuda {

class DeviceAllocator;

struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  DType ab_type = DType::BF16, c_type = DType::BF16;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  const void* bias = nullptr;  // [n], c_type; null: none
  float alpha = 1.f, beta = 0.f;
};

class Gemm {
 public:
  virtual ~Gemm() = default;
  virtual void run(const GemmArgs& g) = 0;
};

// The build's implementation on `stream`; scratch from `alloc` (cuBLASLt's workspace).
std::unique_ptr<Gemm> make_gemm(int device, cudaStream_t stream, DeviceAllocator& alloc);

}  // namespace db::cuda
