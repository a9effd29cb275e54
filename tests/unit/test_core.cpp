#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/core/tensor.h"

using namespace db;

TEST(Core, TensorViewsShareStorage) {
  Tensor t = Tensor::zeros({2, 3, 4});
  Tensor row = t.select(1);  // [3, 4]
  EXPECT_EQ(row.shape(), (Shape{3, 4}));
  row.f32()[5] = 7.f;
  EXPECT_EQ(t.f32()[12 + 5], 7.f);
  Tensor v = t.view({-1, 4});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_THROW(t.view({5, 5}), Error);
  EXPECT_THROW(t.slice(1, 3), Error);
}

TEST(Core, HalfConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even -> 1.0
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.f, -24)), 0x0001);
  for (uint32_t h = 0; h < 0x7c00; ++h) EXPECT_EQ(f32_to_f16(f16_to_f32(uint16_t(h))), h) << h;
}

TEST(Core, ErrorContextPrefixesMessages) {
  try {
    ErrorContext a("file x.safetensors");
    ErrorContext b("tensor w");
    throw Error("bad shape");
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "file x.safetensors: tensor w: bad shape");
  }
  EXPECT_EQ(current_error_context(), "");
}

// Known-answer vectors from the Random123 distribution (kat_vectors, philox4x32_10).
TEST(Core, PhiloxKnownAnswers) {
  auto r = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(r, (PhiloxBlock{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  r = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(r, (PhiloxBlock{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  r = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(r, (PhiloxBlock{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Core, PhiloxNormalsHaveUnitMoments) {
  PhiloxStream s(1234, RngPurpose::Noise, 7, 3);
  const int n = 200000;
  double sum = 0, sq = 0;
  for (int i = 0; i < n; ++i) {
    double x = s.normal(uint64_t(i));
    sum += x;
    sq += x * x;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  // Standard error of the mean is 1/sqrt(n) ~ 0.0022; of the variance ~ sqrt(2/n) ~ 0.0032: 5 sigma.
  EXPECT_NEAR(mean, 0.0, 0.011);
  EXPECT_NEAR(var, 1.0, 0.016);
  // Different keys give different streams.
  PhiloxStream t(1234, RngPurpose::Noise, 7, 4);
  EXPECT_NE(s.u32(0), t.u32(0));
}
