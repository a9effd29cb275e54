// Gemm on cuBLASLt: bf16 (or f32) inputs, f32 compute, bias epilogue; the heuristic's first algorithm
// per shape is cached. cuBLASLt is column-major: a row-major X [r, c] is the column-major X^T, so the
// row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T (swap the operands).
#include "gemm_cublaslt.h"

#include <map>
#include <tuple>

#include "cuda_check.h"
#include "current_device.h"
#include "device_allocator.h"

namespace db::cuda {
namespace {

void check_lt(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error("cuBLASLt: ", what, ": status ", int(s));
}
#define DB_LT(call) check_lt((call), #call)

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDA_R_32F;
    case DType::BF16:
      return CUDA_R_16BF;
    case DType::F16:
      return CUDA_R_16F;
    default:
      throw Error("gemm: unsupported dtype ", dtype_name(t));
  }
}

// 32 MiB: enough for the split-K and stream-K kernels cuBLASLt picks for SD's shapes.
constexpr size_t kWorkspace = size_t(32) << 20;

class CublasLtGemm final : public Gemm {
 public:
  CublasLtGemm(cudaStream_t stream, DeviceAllocator& alloc) : stream_(stream), alloc_(alloc) {
    DB_LT(cublasLtCreate(&handle_));
  }
  ~CublasLtGemm() override {
    plans_.clear();
    cublasLtDestroy(handle_);
  }

  void run(const GemmArgs& g) override {
    if (g.m == 0 || g.n == 0) return;
    GemmDescriptors& p = plan(g);
    std::shared_ptr<void> ws = alloc_.scratch(kWorkspace);
    if (g.bias)
      DB_LT(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
    // Column-major: D^T[n, m] = op(B)^T [n, k] x op(A)^T [k, m].
    DB_LT(cublasLtMatmul(handle_, p.op, &g.alpha, g.b, p.a, g.a, p.b, &g.beta, g.c, p.c, g.c, p.c, &p.algo,
                         ws.get(), kWorkspace, stream_));
  }

 private:
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, DType, DType, bool, bool>;

  GemmDescriptors& plan(const GemmArgs& g) {
    const Key key{g.m, g.n, g.k, g.trans_a, g.trans_b, g.ab_type, g.c_type, g.bias != nullptr, g.beta != 0.f};
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    std::unique_ptr<GemmDescriptors> p = make_gemm_descriptors(g);
    cublasLtMatmulPreference_t pref = nullptr;
    DB_LT(cublasLtMatmulPreferenceCreate(&pref));
    const size_t ws = kWorkspace;
    DB_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                               sizeof(ws)));
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t s =
        cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->c, p->c, pref, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || found == 0)
      throw Error("cuBLASLt: no algorithm for C[", g.m, ", ", g.n, "] = A", g.trans_a ? "^T" : "", " B",
                  g.trans_b ? "^T" : "", " with K = ", g.k, " (", dtype_name(g.ab_type), " -> ",
                  dtype_name(g.c_type), ", status ", int(s), ")");
    p->algo = result.algo;
    return *plans_.emplace(key, std::move(p)).first->second;
  }

  cudaStream_t stream_;
  DeviceAllocator& alloc_;
  cublasLtHandle_t handle_ = nullptr;
  std::map<Key, std::unique_ptr<GemmDescriptors>> plans_;
};

}  // namespace

GemmDescriptors::~GemmDescriptors() {
  if (op) cublasLtMatmulDescDestroy(op);
  for (cublasLtMatrixLayout_t l : {a, b, c})
    if (l) cublasLtMatrixLayoutDestroy(l);
}

std::unique_ptr<GemmDescriptors> make_gemm_descriptors(const GemmArgs& g) {
  auto p = std::make_unique<GemmDescriptors>();
  DB_LT(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // First operand (B^T in column-major terms): stored row-major [K, N] = col-major [N, K] -> no transpose;
  // stored [N, K] (trans_b) = col-major [K, N] -> transpose.
  const cublasOperation_t ta = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                          tb = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  DB_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  DB_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bt = cuda_type(g.c_type);
    DB_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    DB_LT(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof(bt)));
  }
  const cudaDataType_t ab = cuda_type(g.ab_type), c = cuda_type(g.c_type);
  // Layouts of the column-major views: rows, cols, leading dimension.
  const int64_t b_rows = g.trans_b ? g.k : g.n, b_cols = g.trans_b ? g.n : g.k;
  const int64_t a_rows = g.trans_a ? g.m : g.k, a_cols = g.trans_a ? g.k : g.m;
  DB_LT(cublasLtMatrixLayoutCreate(&p->a, ab, uint64_t(b_rows), uint64_t(b_cols), b_rows));
  DB_LT(cublasLtMatrixLayoutCreate(&p->b, ab, uint64_t(a_rows), uint64_t(a_cols), a_rows));
  DB_LT(cublasLtMatrixLayoutCreate(&p->c, c, uint64_t(g.n), uint64_t(g.m), g.n));
  return p;
}

std::unique_ptr<Gemm> make_gemm(int device, cudaStream_t stream, DeviceAllocator& alloc) {
  use_device(device);  // the handle belongs to the device current at creation
  return std::make_unique<CublasLtGemm>(stream, alloc);
}

}  // namespace db::cuda
