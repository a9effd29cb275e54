#pragma once
// cuBLASLt descriptors of one GEMM shape (gemm_cublaslt.cpp), apart from the handle so that they are
// unit-tested on machines without a GPU (descriptors need no device; handles do): tests/cuda_host/.
#include <cublasLt.h>

#include <memory>

#include "gemm.h"

namespace db::cuda {

// The row-major C[m, n] = op(A) op(B) as cuBLASLt's column-major C^T = op(B)^T op(A)^T: `a` describes
// the first cuBLASLt operand (our B), `b` the second (our A), `c` the output; f32 compute (never TF32),
// the bias epilogue when the GEMM has a bias.
struct GemmDescriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};  // filled by the heuristic once a handle exists
  GemmDescriptors() = default;
  GemmDescriptors(const GemmDescriptors&) = delete;
  GemmDescriptors& operator=(const GemmDescriptors&) = delete;
  ~GemmDescriptors();
};
std::unique_ptr<GemmDescriptors> make_gemm_descriptors(const GemmArgs& g);

}  // namespace db::cuda
