// Positive tests of every emulated primitive: barriers and their reductions, shuffles (all modes and
// widths, against the CUDA programming guide's description), votes, warp reductions, __syncwarp,
// static and dynamic shared memory, built-in indices, atomics, cp.async, bf16/vector punning, template
// kernels. Each runs under whatever DB_EMU_SCHEDULE the suite runs with (tests/run_kernel_tests.sh).
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "collective_kernels.h"
#include "device_buffer.h"

namespace db {
namespace {

using test::DeviceBuffer;

TEST(EmuCollectives, BlockSumThroughStaticSharedMemory) {
  const int blocks = 4;
  std::vector<float> x(256 * blocks), want(blocks, 0.f);
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = float(int(i % 17) - 8);
    want[i / 256] += x[i];
  }
  DeviceBuffer<float> dx(x), dout(blocks);
  ASSERT_EQ(test_kernels::block_sum(dx.get(), dout.get(), blocks), cudaSuccess);
  EXPECT_EQ(dout.download(), want);
}

TEST(EmuCollectives, SyncthreadsCountAndOr) {
  DeviceBuffer<int> out(3);
  ASSERT_EQ(test_kernels::barrier_reductions(out.get(), 100, 3), cudaSuccess);
  EXPECT_EQ(out.download(), (std::vector<int>{34, 0, 1}));  // 0, 3, ..., 99
  ASSERT_EQ(test_kernels::barrier_reductions(out.get(), 100, 1), cudaSuccess);
  EXPECT_EQ(out.download(), (std::vector<int>{100, 1, 1}));
  ASSERT_EQ(test_kernels::barrier_reductions(out.get(), 7, 8), cudaSuccess);  // only thread 0
  EXPECT_EQ(out.download(), (std::vector<int>{1, 0, 1}));
}

// The programming guide's wording, independent of the emulator's PTX-based formula: widths split the
// warp into segments; idx reads lane srcLane % width of the segment; up/down return the caller's own
// value when the source would leave the segment; xor may read an earlier segment, not a later one.
int expected_shuffle(int op, int t, int b, int width) {
  const int lane = t % 32, warp_base = t - lane, seg = lane / width * width;
  int src = lane;
  if (op == 0) src = seg + b % width;
  if (op == 1 && lane - seg >= b) src = lane - b;
  if (op == 2 && lane - seg + b < width) src = lane + b;
  if (op == 3 && (lane ^ b) < seg + width) src = lane ^ b;
  return 10 * (warp_base + src) + 1;
}

TEST(EmuCollectives, ShufflesAllModesAndWidths) {
  const int threads = 64;
  const int cases[][2] = {{0, 32}, {5, 32}, {31, 32}, {3, 16}, {17, 16}, {1, 8}, {7, 8},
                          {12, 8}, {2, 4},  {1, 2},   {0, 1},  {16, 32}, {9, 16}};
  DeviceBuffer<int> out(4 * threads);
  for (const auto& c : cases) {
    const int b = c[0], width = c[1];
    ASSERT_EQ(test_kernels::shuffles(out.get(), threads, b, width), cudaSuccess);
    const std::vector<int> got = out.download();
    for (int op = 0; op < 4; ++op)
      for (int t = 0; t < threads; ++t)
        ASSERT_EQ(got[op * threads + t], expected_shuffle(op, t, b, width))
            << "op " << op << " thread " << t << " b " << b << " width " << width;
  }
}

TEST(EmuCollectives, VotesWithFullAndPartialMasks) {
  for (unsigned mask : {0xffffffffu, 0x55555555u, 0x0000ffffu, 0x80000001u}) {
    const int threads = 64;
    DeviceBuffer<unsigned> out(3 * threads);
    ASSERT_EQ(test_kernels::votes(out.get(), threads, mask), cudaSuccess);
    const std::vector<unsigned> got = out.download();
    for (int t = 0; t < threads; ++t) {
      const unsigned lane = unsigned(t) % 32;
      if (!(mask >> lane & 1)) {
        EXPECT_EQ(got[3 * t], 0xDEADu);
        continue;
      }
      EXPECT_EQ(got[3 * t], mask & 0x11111111u) << "ballot, mask " << mask;
      EXPECT_EQ(got[3 * t + 1], mask >> 31) << "any, mask " << mask;
      EXPECT_EQ(got[3 * t + 2], (mask & 0xaaaaaaaau) == 0 ? 1u : 0u) << "all, mask " << mask;
    }
  }
}

TEST(EmuCollectives, VotesInAPartialWarp) {
  DeviceBuffer<unsigned> out(3 * 48);
  ASSERT_EQ(test_kernels::votes(out.get(), 48, 0x0000ffffu), cudaSuccess);  // warp 1 has lanes 0..15
  const std::vector<unsigned> got = out.download();
  for (int t = 0; t < 48; ++t) {
    if (t % 32 < 16) {
      EXPECT_EQ(got[3 * t], 0x00001111u) << t;
    }
  }
}

TEST(EmuCollectives, WarpReductions) {
  DeviceBuffer<int> out(6 * 64);
  ASSERT_EQ(test_kernels::warp_reductions(out.get(), 64), cudaSuccess);
  const std::vector<int> got = out.download();
  for (int t = 0; t < 64; ++t) {
    // v = 3 lane - 40 over lanes 0..31: sum 208, min -40, max 53; u = v + 100.
    const std::vector<int> want = {208, -40, 53, 3408, 60, 153};
    EXPECT_EQ(std::vector<int>(got.begin() + 6 * t, got.begin() + 6 * t + 6), want) << t;
  }
}

TEST(EmuCollectives, SyncwarpOrdersSharedMemoryWithinAWarp) {
  DeviceBuffer<int> out(96);
  ASSERT_EQ(test_kernels::syncwarp_exchange(out.get(), 96), cudaSuccess);
  const std::vector<int> got = out.download();
  for (int t = 0; t < 96; ++t) EXPECT_EQ(got[t], 7 * (t - t % 32 + (t % 32 + 1) % 32)) << t;
}

TEST(EmuCollectives, DynamicSharedMemoryUpToTheOptInLimitWithTheAttribute) {
  int optin = 0;  // 227 KiB on sm_90 (and in the emulator), 163 KiB on sm_80
  ASSERT_EQ(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  const int n = optin / 4;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = float(i);
  DeviceBuffer<float> dx(x), dy(n);
  ASSERT_EQ(test_kernels::dynamic_smem_copy(dx.get(), dy.get(), 1000, 4000), cudaSuccess);
  ASSERT_EQ(test_kernels::allow_dynamic_smem_copy(size_t(n) * 4), cudaSuccess);
  ASSERT_EQ(test_kernels::dynamic_smem_copy(dx.get(), dy.get(), n, size_t(n) * 4), cudaSuccess);
  const std::vector<float> y = dy.download();
  for (int i = 0; i < n; i += 997) EXPECT_EQ(y[i], float(n - 1 - i));
}

TEST(EmuCollectives, BuiltInIndicesIn3D) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const int threads = 3 * 2 * 2 * 4 * 3 * 2;
  DeviceBuffer<uint32_t> out(4 * threads);
  ASSERT_EQ(test_kernels::write_indices(out.get(), grid, block), cudaSuccess);
  const std::vector<uint32_t> got = out.download();
  for (int g = 0; g < threads; ++g) {
    const uint32_t in_block = uint32_t(g % 24);
    const uint32_t x = in_block % 4, y = in_block / 4 % 3, z = in_block / 12;
    EXPECT_EQ(got[4 * g], x | y << 10 | z << 20) << g;
    EXPECT_EQ(got[4 * g + 1], uint32_t(g / 24)) << g;
    EXPECT_EQ(got[4 * g + 2], 9u);
    EXPECT_EQ(got[4 * g + 3], 7u);
  }
}

TEST(EmuCollectives, MathAndBitIntrinsics) {
  const float x = 0.75f;
  DeviceBuffer<float> out(16);
  DeviceBuffer<unsigned> bits(12);
  ASSERT_EQ(test_kernels::intrinsics(out.get(), bits.get(), x), cudaSuccess);
  // The GPU's fast intrinsics (__expf, __logf, __fdividef) and rsqrtf are a few ulp off; 1e-5 relative
  // covers them (the emulator computes them exactly).
  const std::vector<float> want = {
      std::exp(x),  std::exp(x), std::log(x), std::log(x), 1 / std::sqrt(x), std::sqrt(x), x, -x,
      std::tanh(x), std::erf(x), 1 / x,       1 / x,       x * x + 1,        2.f,          x, x};
  const std::vector<float> got = out.download();
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(got[i], want[i], 1e-5f * std::fabs(want[i])) << i;
  const std::vector<unsigned> b = bits.download();
  EXPECT_EQ(b[0], unsigned((uint64_t(0xDEADBEEFu) * 0x12345678u) >> 32));
  EXPECT_EQ(b[1], unsigned(-3));
  EXPECT_EQ(b[2], 9u);
  EXPECT_EQ(b[3], 0u);
  EXPECT_EQ(b[4], 1u);
  EXPECT_EQ(b[5], 8u);
  EXPECT_EQ(b[6], 31u);
  EXPECT_EQ(b[7], 4u);
  EXPECT_EQ(b[8], 0x80000000u);
  EXPECT_EQ(b[9], 0x55114400u);  // selector nibbles 0,4,1,5 pick bytes 00,44,11,55 (low to high)
  EXPECT_EQ(b[10], 2u);          // round half to even
  EXPECT_EQ(b[11], unsigned(-4));
}

TEST(EmuCollectives, TemplateKernelInParentheses) {
  DeviceBuffer<int> out(300);
  ASSERT_EQ(test_kernels::fill_minus_seven(out.get(), 300), cudaSuccess);
  EXPECT_EQ(out.download(), std::vector<int>(300, -7));
}

TEST(EmuCollectives, AtomicsOnGlobalAndSharedMemory) {
  const int threads = 64, blocks = 5, n = threads * blocks;
  DeviceBuffer<int> counters(std::vector<int>{0, -1, INT_MAX, 0, -1, 0, 0});
  ASSERT_EQ(test_kernels::atomics(counters.get(), threads, blocks), cudaSuccess);
  const std::vector<int> c = counters.download();
  EXPECT_EQ(c[0], n);
  EXPECT_EQ(c[1], n - 1);
  EXPECT_EQ(c[2], 0);
  EXPECT_EQ(c[3], n);
  EXPECT_GE(c[4], 0);
  EXPECT_LT(c[4], n);
  EXPECT_EQ(c[5], 2 * n);
  EXPECT_EQ(c[6], n % 7);  // atomicInc with limit 6 counts 0..6
}

TEST(EmuCollectives, CpAsyncAllSizesAndZeroFill) {
  for (int n : {256, 200, 70, 3}) {
    std::vector<float> x(256);
    for (int i = 0; i < 256; ++i) x[i] = float(i + 1);
    DeviceBuffer<float> dx(x), dy(256);
    ASSERT_EQ(test_kernels::cp_async_copy(dx.get(), dy.get(), n), cudaSuccess);
    const std::vector<float> y = dy.download();
    for (int i = 0; i < 256; ++i) ASSERT_EQ(y[i], i < n ? float(i + 1) : 0.f) << "n " << n << " i " << i;
  }
}

TEST(EmuCollectives, Float4LoadsAndBf16PairsRoundToNearestEven) {
  const int n = 256;
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = 1.0f + float(i) * 0.00390625f * 0.37f - float(i % 5) * 1e-3f;
  DeviceBuffer<float> dx(x);
  DeviceBuffer<__nv_bfloat16> dy(n);
  ASSERT_EQ(test_kernels::float4_to_bf16(dx.get(), dy.get(), n), cudaSuccess);
  const std::vector<__nv_bfloat16> y = dy.download();
  for (int i = 0; i < n; ++i) {
    // Round to nearest even on the bit pattern, written out (not via the toolkit's conversion).
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    const uint16_t want = uint16_t((bits + 0x7FFFu + ((bits >> 16) & 1)) >> 16);
    uint16_t got;
    std::memcpy(&got, &y[i], 2);
    ASSERT_EQ(got, want) << i;
  }
}

}  // namespace
}  // namespace db
