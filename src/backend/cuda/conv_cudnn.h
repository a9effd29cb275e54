#pragma once
// cuDNN descriptors of one convolution shape (conv_cudnn.cpp), apart from the handle so that they are
// unit-tested on machines without a GPU (descriptors need no device; handles do): tests/cuda_host/.
#include <cudnn.h>

#include <memory>

#include "conv.h"

namespace db::cuda {

// NHWC x [B, H, W, C] and y [B, Ho, Wo, O], the KRSC ("NHWC") filter [O, kh, kw, C], cross-correlation
// with symmetric padding and f32 compute; tensor-op math for bf16/f16, FMA math for f32 (no TF32, so the
// f32 check mode is f32). Algorithms are chosen later, once a handle exists.
struct ConvDescriptors {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  bool have_fwd = false, have_data = false, have_filter = false;
  ConvDescriptors() = default;
  ConvDescriptors(const ConvDescriptors&) = delete;
  ConvDescriptors& operator=(const ConvDescriptors&) = delete;
  ~ConvDescriptors();
};
std::unique_ptr<ConvDescriptors> make_conv_descriptors(const ConvShape& s, DType t);

}  // namespace db::cuda
