// The layout test: ldmatrix (plain and .trans, x1/x2/x4) feeding mma.m16n8k16 must compute exactly
// the host GEMM D = A * B + C on integer-valued bf16 inputs (every product and sum is exact in f32, so
// any misplaced fragment element shows as a wrong integer). Also runs unchanged on a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "device_buffer.h"
#include "mma_layout_kernels.h"

namespace db {
namespace {

using test::DeviceBuffer;

TEST(EmuMmaLayout, LdmatrixAndMmaMatchHostGemmExactly) {
  // Small distinct integers from a fixed LCG: a transposed or shifted fragment changes the result.
  uint32_t state = 12345;
  auto next = [&](int span) {
    state = state * 1664525u + 1013904223u;
    return int(state >> 24) % span - span / 2;
  };
  std::vector<float> A(256), B(128), C(128);
  for (float& v : A) v = float(next(7));
  for (float& v : B) v = float(next(7));
  for (float& v : C) v = float(next(17));
  std::vector<__nv_bfloat16> a16(256), b16(128);
  for (int i = 0; i < 256; ++i) a16[i] = __float2bfloat16(A[i]);
  for (int i = 0; i < 128; ++i) b16[i] = __float2bfloat16(B[i]);
  std::vector<float> want(128);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float s = C[m * 8 + n];
      for (int k = 0; k < 16; ++k) s += A[m * 16 + k] * B[k * 8 + n];
      want[m * 8 + n] = s;
    }

  DeviceBuffer<__nv_bfloat16> da(a16), db(b16);
  DeviceBuffer<float> dc(C), dd(128);
  for (int variant = 0; variant < 4; ++variant) {
    ASSERT_EQ(test_kernels::mma_tile(da.get(), db.get(), dc.get(), dd.get(), variant), cudaSuccess);
    const std::vector<float> got = dd.download();
    for (int i = 0; i < 128; ++i)
      EXPECT_EQ(got[i], want[i]) << "variant " << variant << " D[" << i / 8 << "][" << i % 8 << "]";
  }
}

}  // namespace
}  // namespace db
