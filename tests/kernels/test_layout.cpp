// kernels/layout.cu against CpuOps (concat, upsample) and a host reference (pad, crop), F32 and BF16.
// Tolerance: bit-exact everywhere. The copies move bits; upsample backward adds the 2x2 block in CpuOps'
// order, (r0[2w] + r0[2w+1]) + (r1[2w] + r1[2w+1]), in f32, rounded once (BF16: CpuOps on the same
// bf16 values, its output rounded).
#include <gtest/gtest.h>

#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/kernels/elementwise.h"
#include "elementwise_test_util.h"

namespace db {
namespace {

using test::DeviceArray;

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

std::string label(const char* op, DType t, size_t offset, int C) {
  return std::string(op) + " " + dtype_name(t) + " offset " + std::to_string(offset) + " C " +
         std::to_string(C);
}

TEST(KernelLayout, ConcatChannelsForwardBackwardMatchCpu) {
  CpuOps cpu;
  struct Case {
    int64_t rows;
    int Ca, Cb;
  };
  // The UNet's up-path skips (640 + 320), and odd widths for the element-wise path.
  for (Case c : {Case{6, 640, 320}, Case{5, 3, 5}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> a = test::rounded(test::random_floats(size_t(c.rows * c.Ca), 1), t);
        const std::vector<float> b = test::rounded(test::random_floats(size_t(c.rows * c.Cb), 2), t);
        Tensor y = Tensor::empty({c.rows, c.Ca + c.Cb});
        cpu.concat_channels_forward(Tensor::from_vector(a, {c.rows, c.Ca}),
                                    Tensor::from_vector(b, {c.rows, c.Cb}), y);
        DeviceArray dA(t, a, offset), dB(t, b, offset), dY(t, size_t(y.numel()), offset);
        ASSERT_EQ(
            kernels::concat_channels_forward(t, dA.get(), dB.get(), dY.get(), c.rows, c.Ca, c.Cb, nullptr),
            cudaSuccess);
        const std::string what = label("concat", t, offset, c.Ca);
        test::expect_bits_equal(dY.download(), values(y), what);

        // Backward: both halves, then each alone (the other pointer null).
        DeviceArray dDA(t, a.size(), offset), dDB(t, b.size(), offset);
        ASSERT_EQ(
            kernels::concat_channels_backward(t, dY.get(), dDA.get(), dDB.get(), c.rows, c.Ca, c.Cb, nullptr),
            cudaSuccess);
        test::expect_bits_equal(dDA.download(), a, what + " backward da");
        test::expect_bits_equal(dDB.download(), b, what + " backward db");
        DeviceArray onlyA(t, a.size(), offset), onlyB(t, b.size(), offset);
        ASSERT_EQ(
            kernels::concat_channels_backward(t, dY.get(), onlyA.get(), nullptr, c.rows, c.Ca, c.Cb, nullptr),
            cudaSuccess);
        ASSERT_EQ(
            kernels::concat_channels_backward(t, dY.get(), nullptr, onlyB.get(), c.rows, c.Ca, c.Cb, nullptr),
            cudaSuccess);
        test::expect_bits_equal(onlyA.download(), a, what + " backward da only");
        test::expect_bits_equal(onlyB.download(), b, what + " backward db only");
      }
}

TEST(KernelLayout, UpsampleNearest2xForwardBackwardMatchCpu) {
  CpuOps cpu;
  const int B = 2, H = 3, W = 5;
  for (int C : {320, 37})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> x = test::rounded(test::random_floats(size_t(B * H * W * C), 3), t);
        const std::vector<float> dy = test::rounded(test::random_floats(size_t(B * 4 * H * W * C), 4), t);
        Tensor y = Tensor::empty({B, 2 * H, 2 * W, C}), dx = Tensor::empty({B, H, W, C});
        cpu.upsample_nearest2x_forward(Tensor::from_vector(x, {B, H, W, C}), y);
        cpu.upsample_nearest2x_backward(Tensor::from_vector(dy, {B, 2 * H, 2 * W, C}), dx);
        DeviceArray dX(t, x, offset), dY(t, dy.size(), offset), dDY(t, dy, offset), dDX(t, x.size(), offset);
        ASSERT_EQ(kernels::upsample_nearest2x_forward(t, dX.get(), dY.get(), B, H, W, C, nullptr),
                  cudaSuccess);
        ASSERT_EQ(kernels::upsample_nearest2x_backward(t, dDY.get(), dDX.get(), B, H, W, C, nullptr),
                  cudaSuccess);
        const std::string what = label("upsample", t, offset, C);
        test::expect_bits_equal(dY.download(), values(y), what);
        test::expect_bits_equal(dDX.download(), test::rounded(values(dx), t), what + " backward");
      }
}

// y [B, H + pt + pb, W + pl + pr, C] = x zero-padded.
std::vector<float> pad_reference(const std::vector<float>& x, int B, int H, int W, int C, int pt, int pb,
                                 int pl, int pr) {
  const int Ho = H + pt + pb, Wo = W + pl + pr;
  std::vector<float> y(size_t(B * Ho * Wo * C), 0.f);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int w = 0; w < W; ++w)
        for (int c = 0; c < C; ++c)
          y[size_t(((b * Ho + h + pt) * Wo + w + pl) * C + c)] = x[size_t(((b * H + h) * W + w) * C + c)];
  return y;
}

TEST(KernelLayout, PadAndCropAreInverse) {
  struct Case {
    int C, pt, pb, pl, pr;
  };
  const int B = 2, H = 5, W = 4;
  // The VAE encoder's F.pad(0, 1, 0, 1) at 128 channels; an asymmetric pad at an odd width.
  for (Case c : {Case{128, 0, 1, 0, 1}, Case{3, 1, 2, 3, 0}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> x = test::rounded(test::random_floats(size_t(B * H * W * c.C), 5), t);
        const std::vector<float> want = pad_reference(x, B, H, W, c.C, c.pt, c.pb, c.pl, c.pr);
        DeviceArray dX(t, x, offset), dY(t, want.size(), offset), dBack(t, x.size(), offset);
        ASSERT_EQ(kernels::pad_nhwc(t, dX.get(), dY.get(), B, H, W, c.C, c.pt, c.pb, c.pl, c.pr, nullptr),
                  cudaSuccess);
        const std::string what = label("pad", t, offset, c.C);
        test::expect_bits_equal(dY.download(), want, what);
        ASSERT_EQ(kernels::crop_nhwc(t, dY.get(), dBack.get(), B, H, W, c.C, c.pt, c.pb, c.pl, c.pr, nullptr),
                  cudaSuccess);
        test::expect_bits_equal(dBack.download(), x, what + " crop");
      }
}

TEST(KernelLayout, RejectsUnsupportedArguments) {
  DeviceArray x(DType::F32, 64), y(DType::F32, 256);
  EXPECT_EQ(kernels::pad_nhwc(DType::F32, x.get(), y.get(), 1, 2, 2, 4, -1, 0, 0, 0, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kernels::upsample_nearest2x_forward(DType::I64, x.get(), y.get(), 1, 2, 2, 4, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kernels::upsample_nearest2x_backward(DType::F16, y.get(), x.get(), 1, 2, 2, 4, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace db
