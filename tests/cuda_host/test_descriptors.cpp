// cuBLASLt and cuDNN descriptors built by the CUDA backend, checked without a GPU (descriptors need no
// device; handles and algorithm searches do, and run only in build/gpu_cuda_tests). Built with nvcc's
// toolkit only (build/cuda_host_tests), linked with the real libcublasLt and libcudnn.
#include <gtest/gtest.h>

#include <cstdint>

#include "../../src/backend/cuda/conv_cudnn.h"
#include "../../src/backend/cuda/gemm_cublaslt.h"
#include "dreambooth/core/error.h"

namespace db::cuda {
namespace {

struct Layout {
  uint64_t rows = 0, cols = 0;
  int64_t ld = 0;
  cudaDataType_t type{};
};

Layout read(cublasLtMatrixLayout_t l) {
  Layout r;
  size_t got = 0;
  uint32_t type = 0;
  EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ROWS, &r.rows, sizeof r.rows, &got),
            0);
  EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_COLS, &r.cols, sizeof r.cols, &got),
            0);
  EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_LD, &r.ld, sizeof r.ld, &got), 0);
  EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(l, CUBLASLT_MATRIX_LAYOUT_TYPE, &type, sizeof type, &got), 0);
  r.type = cudaDataType_t(type);
  return r;
}

template <class T>
T attribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a) {
  T v{};
  size_t got = 0;
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(d, a, &v, sizeof v, &got), 0);
  return v;
}

// The column-major product the descriptors describe: op(first)[n, k] x op(second)[k, m] = c[n, m]
// (the row-major C[m, n] transposed), for every transpose combination the backend uses.
TEST(CublasLtDescriptors, OperandLayoutsDescribeTheRowMajorProduct) {
  const int64_t m = 4096, n = 320, k = 768;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (bool bias : {false, true}) {
        GemmArgs g;
        g.m = m, g.n = n, g.k = k, g.trans_a = ta, g.trans_b = tb;
        g.ab_type = DType::BF16, g.c_type = ta ? DType::F32 : DType::BF16;  // dW GEMMs accumulate in f32
        g.bias = bias ? reinterpret_cast<const void*>(0x100) : nullptr;
        auto d = make_gemm_descriptors(g);
        SCOPED_TRACE(testing::Message() << "trans_a " << ta << " trans_b " << tb << " bias " << bias);
        const Layout first = read(d->a), second = read(d->b), c = read(d->c);
        const auto op_a = attribute<int32_t>(d->op, CUBLASLT_MATMUL_DESC_TRANSA);
        const auto op_b = attribute<int32_t>(d->op, CUBLASLT_MATMUL_DESC_TRANSB);
        // op(first): [n, k]; op(second): [k, m]; c: [n, m] with ld n.
        EXPECT_EQ(op_a == CUBLAS_OP_T ? first.cols : first.rows, uint64_t(n));
        EXPECT_EQ(op_a == CUBLAS_OP_T ? first.rows : first.cols, uint64_t(k));
        EXPECT_EQ(op_b == CUBLAS_OP_T ? second.cols : second.rows, uint64_t(k));
        EXPECT_EQ(op_b == CUBLAS_OP_T ? second.rows : second.cols, uint64_t(m));
        EXPECT_EQ(c.rows, uint64_t(n));
        EXPECT_EQ(c.cols, uint64_t(m));
        EXPECT_EQ(c.ld, n);
        // Row-major storage: the leading dimension of each column-major view is its row count.
        EXPECT_EQ(first.ld, int64_t(first.rows));
        EXPECT_EQ(second.ld, int64_t(second.rows));
        EXPECT_EQ(first.type, CUDA_R_16BF);
        EXPECT_EQ(c.type, ta ? CUDA_R_32F : CUDA_R_16BF);
        EXPECT_EQ(attribute<int32_t>(d->op, CUBLASLT_MATMUL_DESC_COMPUTE_TYPE), CUBLAS_COMPUTE_32F)
            << "f32 compute, never TF32";
        EXPECT_EQ(attribute<uint32_t>(d->op, CUBLASLT_MATMUL_DESC_EPILOGUE),
                  uint32_t(bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT));
      }
}

TEST(CublasLtDescriptors, UnsupportedDtypeIsAnError) {
  GemmArgs g;
  g.m = g.n = g.k = 8;
  g.ab_type = DType::I32;
  EXPECT_THROW(make_gemm_descriptors(g), Error);
}

// SD 1.5's convolution shapes at 512x512 (batch 2): the output size cuDNN derives from the descriptors
// equals ConvShape's, in NHWC, and the math type follows the dtype.
TEST(CudnnDescriptors, OutputShapeAndMathMatchConvShape) {
  struct Case {
    int H, C, O, k, stride, pad;
  };
  const Case cases[] = {{64, 4, 320, 3, 1, 1},    {64, 320, 320, 3, 2, 1}, {32, 640, 640, 3, 1, 1},
                        {8, 1280, 1280, 3, 1, 1}, {64, 960, 320, 1, 1, 0}, {513, 128, 128, 3, 2, 0},
                        {512, 3, 128, 3, 1, 1}};
  for (const Case& c : cases)
    for (DType t : {DType::BF16, DType::F32}) {
      ConvShape s;
      s.B = 2, s.H = s.W = c.H, s.C = c.C, s.O = c.O, s.kh = s.kw = c.k, s.stride = c.stride;
      s.pad_h = s.pad_w = c.pad;
      auto d = make_conv_descriptors(s, t);
      int n = 0, ch = 0, h = 0, w = 0;
      ASSERT_EQ(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &n, &ch, &h, &w),
                CUDNN_STATUS_SUCCESS);
      EXPECT_EQ(n, s.B);
      EXPECT_EQ(ch, s.O);
      EXPECT_EQ(h, s.Ho()) << "H " << c.H << " k " << c.k << " stride " << c.stride;
      EXPECT_EQ(w, s.Wo());
      cudnnDataType_t dt{};
      int nd = 0, nn = 0, cc = 0, hh = 0, ww = 0, sn = 0, sc = 0, sh = 0, sw = 0;
      ASSERT_EQ(cudnnGetTensor4dDescriptor(d->y, &dt, &nn, &cc, &hh, &ww, &sn, &sc, &sh, &sw),
                CUDNN_STATUS_SUCCESS);
      EXPECT_EQ(sc, 1) << "NHWC: channels are the innermost dimension";
      EXPECT_EQ(sw, s.O);
      EXPECT_EQ(dt, t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT);
      (void)nd;
      cudnnMathType_t math{};
      ASSERT_EQ(cudnnGetConvolutionMathType(d->conv, &math), CUDNN_STATUS_SUCCESS);
      EXPECT_EQ(math, t == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH);
    }
}

}  // namespace
}  // namespace db::cuda
