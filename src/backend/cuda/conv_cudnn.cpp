// Conv on cuDNN's legacy (imperative) convolution API: NHWC tensors and KRSC filters of one element type
// (bf16 on a GPU), f32 compute, tensor-op math. Why the legacy API: the graph API's C++ frontend is a
// separate header library (neither a Debian package nor part of the CUDA toolkit), its C backend API
// needs ~10x the code for the same three operations, and the legacy API covers what SD needs (3x3 and
// 1x1, stride 1 and 2, NHWC bf16, deterministic algorithms). Per shape, a plan (descriptors and the
// fastest deterministic algorithm cuDNN's heuristics propose within the workspace limit) is built once
// and cached. Legacy wgrad writes dw in the input dtype, so the f32 accumulation is a bf16 dw into
// scratch plus one add kernel (PyTorch autocast's weight gradient has the same bf16 precision).
#include "conv_cudnn.h"

#include <map>
#include <tuple>

#include "cuda_check.h"
#include "current_device.h"
#include "device_allocator.h"
#include "dreambooth/kernels/elementwise.h"

namespace db::cuda {
namespace {

void check_dnn(cudnnStatus_t s, const char* what) {
  if (s != CUDNN_STATUS_SUCCESS) throw Error("cuDNN: ", what, ": ", cudnnGetErrorString(s));
}
#define DB_DNN(call) check_dnn((call), #call)

cudnnDataType_t dnn_type(DType t) {
  switch (t) {
    case DType::F32:
      return CUDNN_DATA_FLOAT;
    case DType::BF16:
      return CUDNN_DATA_BFLOAT16;
    case DType::F16:
      return CUDNN_DATA_HALF;
    default:
      throw Error("conv: unsupported dtype ", dtype_name(t));
  }
}

constexpr size_t kWorkspaceLimit = size_t(256) << 20;

// The first result that succeeded, is deterministic when asked, and fits the workspace limit.
template <class Perf>
const Perf* pick(const Perf* perf, int n, bool deterministic) {
  for (int i = 0; i < n; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kWorkspaceLimit &&
        (!deterministic || perf[i].determinism == CUDNN_DETERMINISTIC))
      return &perf[i];
  return nullptr;
}

class CudnnConv final : public Conv {
 public:
  CudnnConv(cudaStream_t stream, DeviceAllocator& alloc) : stream_(stream), alloc_(alloc) {
    DB_DNN(cudnnCreate(&handle_));
    DB_DNN(cudnnSetStream(handle_, stream));
  }
  ~CudnnConv() override {
    plans_.clear();
    cudnnDestroy(handle_);
  }

  void forward(const ConvShape& s, DType t, const void* x, const void* w, void* y) override {
    ConvDescriptors& p = plan(s, t);
    if (!p.have_fwd) {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int n = 0;
      DB_DNN(cudnnGetConvolutionForwardAlgorithm_v7(handle_, p.x, p.w, p.conv, p.y,
                                                    CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      const auto* best = pick(perf, n, false);
      DB_CHECK(best, "cuDNN: no forward algorithm for ", describe(s, t));
      p.fwd = best->algo;
      p.fwd_ws = best->memory;
      p.have_fwd = true;
    }
    const float one = 1.f, zero = 0.f;
    std::shared_ptr<void> ws = alloc_.scratch(p.fwd_ws);
    DB_DNN(cudnnConvolutionForward(handle_, &one, p.x, x, p.w, w, p.conv, p.fwd, ws.get(), p.fwd_ws, &zero,
                                   p.y, y));
  }

  void backward_data(const ConvShape& s, DType t, const void* dy, const void* w, void* dx) override {
    ConvDescriptors& p = plan(s, t);
    if (!p.have_data) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int n = 0;
      DB_DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle_, p.w, p.y, p.conv, p.x,
                                                         CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      const auto* best = pick(perf, n, true);
      DB_CHECK(best, "cuDNN: no deterministic data-gradient algorithm for ", describe(s, t));
      p.bwd_data = best->algo;
      p.bwd_data_ws = best->memory;
      p.have_data = true;
    }
    const float one = 1.f, zero = 0.f;
    std::shared_ptr<void> ws = alloc_.scratch(p.bwd_data_ws);
    DB_DNN(cudnnConvolutionBackwardData(handle_, &one, p.w, w, p.y, dy, p.conv, p.bwd_data, ws.get(),
                                        p.bwd_data_ws, &zero, p.x, dx));
  }

  void backward_filter(const ConvShape& s, DType t, const void* x, const void* dy, float* dw) override {
    ConvDescriptors& p = plan(s, t);
    if (!p.have_filter) {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int n = 0;
      DB_DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          handle_, p.x, p.y, p.conv, p.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      const auto* best = pick(perf, n, true);
      DB_CHECK(best, "cuDNN: no deterministic filter-gradient algorithm for ", describe(s, t));
      p.bwd_filter = best->algo;
      p.bwd_filter_ws = best->memory;
      p.have_filter = true;
    }
    const int64_t n = int64_t(s.O) * s.kh * s.kw * s.C;
    const float one = 1.f, zero = 0.f;
    std::shared_ptr<void> ws = alloc_.scratch(p.bwd_filter_ws);
    if (t == DType::F32) {  // same dtype as the accumulator: accumulate in place (beta = 1)
      DB_DNN(cudnnConvolutionBackwardFilter(handle_, &one, p.x, x, p.y, dy, p.conv, p.bwd_filter, ws.get(),
                                            p.bwd_filter_ws, &one, p.w, dw));
      return;
    }
    std::shared_ptr<void> tmp = alloc_.scratch(size_t(n) * dtype_size(t));
    DB_DNN(cudnnConvolutionBackwardFilter(handle_, &one, p.x, x, p.y, dy, p.conv, p.bwd_filter, ws.get(),
                                          p.bwd_filter_ws, &zero, p.w, tmp.get()));
    DB_CUDA(kernels::add(DType::F32, dw, t, tmp.get(), DType::F32, dw, n, 1.f, 1.f, stream_));
  }

 private:
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, DType>;

  static std::string describe(const ConvShape& s, DType t) {
    return str_cat("x [", s.B, ", ", s.H, ", ", s.W, ", ", s.C, "], w [", s.O, ", ", s.kh, ", ", s.kw, ", ",
                   s.C, "], stride ", s.stride, ", padding ", s.pad_h, "x", s.pad_w, " (", dtype_name(t),
                   ")");
  }

  ConvDescriptors& plan(const ConvShape& s, DType t) {
    const Key key{s.B, s.H, s.W, s.C, s.O, s.kh, s.kw, s.stride, s.pad_h, s.pad_w, t};
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    return *plans_.emplace(key, make_conv_descriptors(s, t)).first->second;
  }

  cudaStream_t stream_;
  DeviceAllocator& alloc_;
  cudnnHandle_t handle_ = nullptr;
  std::map<Key, std::unique_ptr<ConvDescriptors>> plans_;
};

}  // namespace

ConvDescriptors::~ConvDescriptors() {
  if (x) cudnnDestroyTensorDescriptor(x);
  if (y) cudnnDestroyTensorDescriptor(y);
  if (w) cudnnDestroyFilterDescriptor(w);
  if (conv) cudnnDestroyConvolutionDescriptor(conv);
}

std::unique_ptr<ConvDescriptors> make_conv_descriptors(const ConvShape& s, DType t) {
  auto p = std::make_unique<ConvDescriptors>();
  const cudnnDataType_t dt = dnn_type(t);
  DB_DNN(cudnnCreateTensorDescriptor(&p->x));
  DB_DNN(cudnnCreateTensorDescriptor(&p->y));
  DB_DNN(cudnnCreateFilterDescriptor(&p->w));
  DB_DNN(cudnnCreateConvolutionDescriptor(&p->conv));
  DB_DNN(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NHWC, dt, s.B, s.C, s.H, s.W));
  DB_DNN(cudnnSetFilter4dDescriptor(p->w, dt, CUDNN_TENSOR_NHWC, s.O, s.C, s.kh, s.kw));
  DB_DNN(cudnnSetConvolution2dDescriptor(p->conv, s.pad_h, s.pad_w, s.stride, s.stride, 1, 1,
                                         CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  DB_DNN(cudnnSetConvolutionMathType(p->conv, t == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  DB_DNN(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, dt, s.B, s.O, s.Ho(), s.Wo()));
  return p;
}

std::unique_ptr<Conv> make_conv(int device, cudaStream_t stream, DeviceAllocator& alloc) {
  use_device(device);  // the handle belongs to the device current at creation
  return std::make_unique<CudnnConv>(stream, alloc);
}

}  // namespace db::cuda
