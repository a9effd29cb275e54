// Conv in the emulated build (the stand-in for cuDNN, which needs a GPU): the CPU reference convolution
// on host f32 copies of the emulated device memory, results rounded to the tensor dtypes.
#include "conv.h"

#include "dreambooth/backend/cpu_ops.h"
#include "host_staging.h"

namespace db::cuda {
namespace {

class EmulatedConv final : public Conv {
 public:
  explicit EmulatedConv(cudaStream_t stream) : stream_(stream) {}

  void forward(const ConvShape& s, DType t, const void* x, const void* w, void* y) override {
    const Tensor hx = download_f32(x, t, {s.B, s.H, s.W, s.C}, stream_);
    const Tensor hw = download_f32(w, t, {s.O, s.kh, s.kw, s.C}, stream_);
    Tensor hy = Tensor::empty({s.B, s.Ho(), s.Wo(), s.O});
    cpu_.conv2d_forward(hx, hw, Tensor(), hy, geometry(s));
    upload_from_f32(hy, t, y, stream_);
  }
  void backward_data(const ConvShape& s, DType t, const void* dy, const void* w, void* dx) override {
    const Tensor hdy = download_f32(dy, t, {s.B, s.Ho(), s.Wo(), s.O}, stream_);
    const Tensor hw = download_f32(w, t, {s.O, s.kh, s.kw, s.C}, stream_);
    const Tensor hx = Tensor::zeros({s.B, s.H, s.W, s.C});  // shape only: dx does not read x
    Tensor hdx = Tensor::empty({s.B, s.H, s.W, s.C});
    cpu_.conv2d_backward(hdy, hx, hw, &hdx, nullptr, nullptr, geometry(s));
    upload_from_f32(hdx, t, dx, stream_);
  }
  void backward_filter(const ConvShape& s, DType t, const void* x, const void* dy, float* dw) override {
    const Tensor hdy = download_f32(dy, t, {s.B, s.Ho(), s.Wo(), s.O}, stream_);
    const Tensor hx = download_f32(x, t, {s.B, s.H, s.W, s.C}, stream_);
    const Tensor hw = Tensor::zeros({s.O, s.kh, s.kw, s.C});  // shape only
    Tensor hdw = download_f32(dw, DType::F32, {s.O, s.kh, s.kw, s.C}, stream_);
    cpu_.conv2d_backward(hdy, hx, hw, nullptr, &hdw, nullptr, geometry(s));
    upload_from_f32(hdw, DType::F32, dw, stream_);
  }

 private:
  static Conv2dGeometry geometry(const ConvShape& s) {
    return {s.stride, s.pad_h, s.pad_h, s.pad_w, s.pad_w};
  }
  cudaStream_t stream_;
  CpuOps cpu_;
};

}  // namespace

std::unique_ptr<Conv> make_conv(int device, cudaStream_t stream, DeviceAllocator& alloc) {
  return std::make_unique<EmulatedConv>(stream);
}

}  // namespace db::cuda
