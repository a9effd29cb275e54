#pragma once
// Conv: the CUDA backend's 2-D convolutions behind a thin interface (issue 14). The GPU build runs cuDNN
// (conv_cudnn.cpp); the emulated build runs the CPU reference on the emulated device memory (conv_emu.cpp).
// NHWC activations [B, H, W, C], filters [O, kh, kw, C] (cuDNN's KRSC "NHWC" filter layout, which is how
// the parameter registry stores conv weights), cross-correlation, dilation 1, groups 1, SYMMETRIC padding
// only (CudaOps pads explicitly for the VAE encoder's (0, 1, 0, 1)). No bias here: CudaOps adds it.
#include <cuda_runtime_api.h>

#include <memory>

#include "dreambooth/backend/ops.h"

namespace db::cuda {

class DeviceAllocator;

struct ConvShape {
  int B = 0, H = 0, W = 0, C = 0;  // input
  int O = 0, kh = 0, kw = 0;       // filter
  int stride = 1, pad_h = 0, pad_w = 0;
  int Ho() const { return (H + 2 * pad_h - kh) / stride + 1; }
  int Wo() const { return (W + 2 * pad_w - kw) / stride + 1; }
};

class Conv {
 public:
  virtual ~Conv() = default;
  // y [B, Ho, Wo, O] = conv(x, w), overwritten; x, w, y of element type t.
  virtual void forward(const ConvShape& s, DType t, const void* x, const void* w, void* y) = 0;
  // dx [B, H, W, C] (t, overwritten) = the data gradient from dy [B, Ho, Wo, O].
  virtual void backward_data(const ConvShape& s, DType t, const void* dy, const void* w, void* dx) = 0;
  // dw [O, kh, kw, C] f32 += the filter gradient from x and dy (t).
  virtual void backward_filter(const ConvShape& s, DType t, const void* x, const void* dy, float* dw) = 0;
};

std::unique_ptr<Conv> make_conv(int device, cudaStream_t stream, DeviceAllocator& alloc);

}  // namespace db::cuda
