// kernels/group_norm.cu and kernels/layer_norm.cu against CpuOps (src/backend/cpu/norm*.cpp) on random
// inputs at SD's channels-per-group (C/G = 1 .. 80), small N, f32 and bf16.
//
// Tolerances (relative L2 error over the whole tensor):
//  - f32 outputs (y, dx): 1e-6. The kernels accumulate in f32 where the CPU uses double; with these
//    sizes (<= 40960 values per group) the measured error is <= 1.3e-7 (2e-7 for dgamma/dbeta at
//    N = 4096), a few ulp; 1e-6 leaves room for FMA contraction and expf on a real GPU.
//  - bf16 outputs (y, dx): 1e-2. Inputs are bf16 on both sides (the CPU gets the same rounded values);
//    the kernel's single rounding of the f32 result to bf16 gives the measured 1.7e-3.
//  - mean, rstd, dgamma, dbeta (f32 in both dtypes, same inputs on both sides): 1e-6, as f32 outputs.
//  - determinism: bit-exact between two runs (no float atomics, fixed-order sums).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "../emu/device_buffer.h"
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/dtype.h"
#include "dreambooth/kernels/norm.h"

namespace db {
namespace {

using test::DeviceBuffer;

constexpr double kTolF32 = 1e-6, kTolBF16 = 1e-2, kTolStats = 1e-6;

double tol_for(DType t) {
  return t == DType::F32 ? kTolF32 : kTolBF16;
}

std::vector<float> randn(size_t n, uint32_t seed, float mean, float stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (float& e : v) e = d(gen);
  return v;
}

// The values the kernel sees in dtype t, as f32 (what the CPU reference gets).
std::vector<float> rounded(DType t, std::vector<float> v) {
  if (t == DType::BF16)
    for (float& e : v) e = bf16_to_f32(f32_to_bf16(e));
  return v;
}

// A device tensor of dtype t (F32 or BF16) with f32 host copies in and out. `pad` leading elements
// are allocated before it, so pad = 1 gives a pointer off the 16-byte alignment.
class TBuf {
 public:
  TBuf(DType t, size_t n, size_t pad = 0) : t_(t), n_(n), pad_(pad) {
    if (t == DType::F32)
      f_ = std::make_unique<DeviceBuffer<float>>(n + pad);
    else
      h_ = std::make_unique<DeviceBuffer<uint16_t>>(n + pad);
  }
  TBuf(DType t, const std::vector<float>& v, size_t pad = 0) : TBuf(t, v.size(), pad) { upload(v); }
  void upload(const std::vector<float>& v) {
    if (f_) {
      std::vector<float> all(pad_, 0.f);
      all.insert(all.end(), v.begin(), v.end());
      f_->upload(all);
    } else {
      std::vector<uint16_t> all(pad_ + n_, 0);
      for (size_t i = 0; i < n_; ++i) all[pad_ + i] = f32_to_bf16(v[i]);
      h_->upload(all);
    }
  }
  void* get() const {
    return f_ ? static_cast<void*>(f_->get() + pad_) : static_cast<void*>(h_->get() + pad_);
  }
  std::vector<float> download() const {
    std::vector<float> out(n_);
    if (f_) {
      const std::vector<float> all = f_->download();
      std::copy(all.begin() + long(pad_), all.end(), out.begin());
    } else {
      const std::vector<uint16_t> all = h_->download();
      for (size_t i = 0; i < n_; ++i) out[i] = bf16_to_f32(all[pad_ + i]);
    }
    return out;
  }

 private:
  DType t_;
  size_t n_, pad_;
  std::unique_ptr<DeviceBuffer<float>> f_;
  std::unique_ptr<DeviceBuffer<uint16_t>> h_;
};

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - want[i];
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

Tensor host(const std::vector<float>& v, const Shape& s) {
  return Tensor::from_vector(v, s);
}
std::vector<float> vec(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

struct GnCase {
  int B, N, C, G;
};

// SD's channels per group at G = 32 (C/G = 1, 4, 10, 20, 30, 40, 60, 80), odd N, one case with a
// group of 3 channels (no vector path in either dtype), and N = 130 (three backward row chunks).
const GnCase kGnCases[] = {{2, 9, 32, 32},   {1, 7, 128, 32},  {2, 130, 320, 32},
                           {1, 5, 640, 32},  {1, 3, 960, 32},  {2, 3, 1280, 32},
                           {1, 2, 1920, 32}, {1, 3, 2560, 32}, {2, 11, 24, 8}};

struct GnInputs {
  std::vector<float> x, gamma, beta, dy;
};

GnInputs gn_inputs(DType t, const GnCase& c, uint32_t seed) {
  const size_t n = size_t(c.B) * c.N * c.C;
  return {rounded(t, randn(n, seed, 0.5f, 2.f)), rounded(t, randn(size_t(c.C), seed + 1, 1.f, 0.2f)),
          rounded(t, randn(size_t(c.C), seed + 2, 0.f, 0.3f)), rounded(t, randn(n, seed + 3, 0.f, 1.f))};
}

struct GnResult {
  std::vector<float> y, mean, rstd, dx, dgamma, dbeta;
};

// Forward then backward on the device; dgamma/dbeta pre-filled with `prefill` (+= semantics).
GnResult gn_device(DType t, const GnCase& c, const GnInputs& in, bool silu, const std::vector<float>& prefill,
                   size_t pad = 0) {
  const size_t n = in.x.size();
  TBuf x(t, in.x, pad), gamma(t, in.gamma), beta(t, in.beta), dy(t, in.dy, pad), y(t, n, pad), dx(t, n, pad);
  DeviceBuffer<float> mean(size_t(c.B) * c.G), rstd(size_t(c.B) * c.G), dgamma(prefill), dbeta(prefill);
  GnResult r;
  EXPECT_EQ(kernels::group_norm_forward(t, x.get(), gamma.get(), beta.get(), y.get(), mean.get(), rstd.get(),
                                        c.B, c.N, c.C, c.G, 1e-5f, silu, nullptr),
            cudaSuccess);
  DeviceBuffer<uint8_t> ws(std::max<size_t>(1, kernels::group_norm_backward_workspace(c.B, c.N, c.C, c.G)));
  EXPECT_EQ(kernels::group_norm_backward(t, dy.get(), x.get(), gamma.get(), beta.get(), mean.get(),
                                         rstd.get(), dx.get(), dgamma.get(), dbeta.get(), c.B, c.N, c.C, c.G,
                                         silu, ws.get(), nullptr),
            cudaSuccess);
  r.y = y.download();
  r.mean = mean.download();
  r.rstd = rstd.download();
  r.dx = dx.download();
  r.dgamma = dgamma.download();
  r.dbeta = dbeta.download();
  return r;
}

GnResult gn_cpu(const GnCase& c, const GnInputs& in, bool silu, const std::vector<float>& prefill) {
  CpuOps ops;
  const Shape s{c.B, c.N, c.C};
  const Tensor x = host(in.x, s), gamma = host(in.gamma, {c.C}), beta = host(in.beta, {c.C}),
               dy = host(in.dy, s);
  Tensor y = Tensor::zeros(s), mean = Tensor::zeros({c.B, c.G}), rstd = Tensor::zeros({c.B, c.G});
  Tensor dx = Tensor::zeros(s), dgamma = host(prefill, {c.C}), dbeta = host(prefill, {c.C});
  const Activation act = silu ? Activation::SiLU : Activation::None;
  ops.group_norm_forward(x, gamma, beta, y, c.G, 1e-5f, act, &mean, &rstd);
  ops.group_norm_backward(dy, x, gamma, beta, mean, rstd, c.G, act, &dx, &dgamma, &dbeta);
  return {vec(y), vec(mean), vec(rstd), vec(dx), vec(dgamma), vec(dbeta)};
}

void expect_gn_close(DType t, const GnResult& got, const GnResult& want) {
  EXPECT_LE(rel_l2(got.y, want.y), tol_for(t)) << "y";
  EXPECT_LE(rel_l2(got.mean, want.mean), kTolStats) << "mean";
  EXPECT_LE(rel_l2(got.rstd, want.rstd), kTolStats) << "rstd";
  EXPECT_LE(rel_l2(got.dx, want.dx), tol_for(t)) << "dx";
  EXPECT_LE(rel_l2(got.dgamma, want.dgamma), kTolStats) << "dgamma";
  EXPECT_LE(rel_l2(got.dbeta, want.dbeta), kTolStats) << "dbeta";
}

std::vector<float> prefill_for(int C) {
  return randn(size_t(C), 99, 0.f, 5.f);
}

void run_gn_cases(DType t, bool silu) {
  uint32_t seed = 1;
  for (const GnCase& c : kGnCases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " N=" << c.N << " C=" << c.C << " G=" << c.G
                                    << " silu=" << silu << " " << dtype_name(t));
    const GnInputs in = gn_inputs(t, c, seed += 10);
    const std::vector<float> pre = prefill_for(c.C);
    expect_gn_close(t, gn_device(t, c, in, silu, pre), gn_cpu(c, in, silu, pre));
  }
}

TEST(KernelGroupNorm, MatchesCpuF32) {
  run_gn_cases(DType::F32, false);
}
TEST(KernelGroupNorm, MatchesCpuF32Silu) {
  run_gn_cases(DType::F32, true);
}
TEST(KernelGroupNorm, MatchesCpuBF16) {
  run_gn_cases(DType::BF16, false);
}
TEST(KernelGroupNorm, MatchesCpuBF16Silu) {
  run_gn_cases(DType::BF16, true);
}

// Tensors one element off the 16-byte alignment take the scalar path.
TEST(KernelGroupNorm, MisalignedPointersUseScalarPath) {
  for (DType t : {DType::F32, DType::BF16}) {
    const GnCase c{2, 6, 320, 32};
    SCOPED_TRACE(dtype_name(t));
    const GnInputs in = gn_inputs(t, c, 7);
    const std::vector<float> pre = prefill_for(c.C);
    expect_gn_close(t, gn_device(t, c, in, true, pre, /*pad=*/1), gn_cpu(c, in, true, pre));
  }
}

// SD 1.5's 64x64 latent at C = 320: one block per group walks 40960 values; 64 backward row chunks.
TEST(KernelGroupNormLarge, Sd15Latent64x64) {
  const GnCase c{1, 4096, 320, 32};
  const GnInputs in = gn_inputs(DType::F32, c, 5);
  const std::vector<float> pre = prefill_for(c.C);
  expect_gn_close(DType::F32, gn_device(DType::F32, c, in, true, pre), gn_cpu(c, in, true, pre));
}

TEST(KernelGroupNorm, BitDeterministic) {
  for (DType t : {DType::F32, DType::BF16}) {
    const GnCase c{2, 130, 320, 32};
    const GnInputs in = gn_inputs(t, c, 3);
    const std::vector<float> pre = prefill_for(c.C);
    const GnResult a = gn_device(t, c, in, true, pre), b = gn_device(t, c, in, true, pre);
    EXPECT_TRUE(same_bits(a.y, b.y) && same_bits(a.mean, b.mean) && same_bits(a.rstd, b.rstd));
    EXPECT_TRUE(same_bits(a.dx, b.dx) && same_bits(a.dgamma, b.dgamma) && same_bits(a.dbeta, b.dbeta));
  }
}

// Null mean/rstd in the forward; null dgamma, dbeta or dx in the backward; what is given is right.
TEST(KernelGroupNorm, OptionalOutputs) {
  const DType t = DType::F32;
  const GnCase c{2, 70, 640, 32};
  const GnInputs in = gn_inputs(t, c, 11);
  const std::vector<float> pre = prefill_for(c.C);
  const GnResult want = gn_cpu(c, in, false, pre);
  const size_t n = in.x.size();
  TBuf x(t, in.x), gamma(t, in.gamma), beta(t, in.beta), dy(t, in.dy), y(t, n), dx(t, n);
  ASSERT_EQ(kernels::group_norm_forward(t, x.get(), gamma.get(), beta.get(), y.get(), nullptr, nullptr, c.B,
                                        c.N, c.C, c.G, 1e-5f, false, nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(y.download(), want.y), kTolF32);
  DeviceBuffer<float> mean(want.mean), rstd(want.rstd), dgamma(pre), dbeta(pre);
  DeviceBuffer<uint8_t> ws(kernels::group_norm_backward_workspace(c.B, c.N, c.C, c.G));
  // dx and dgamma only: dbeta untouched.
  ASSERT_EQ(kernels::group_norm_backward(t, dy.get(), x.get(), gamma.get(), nullptr, mean.get(), rstd.get(),
                                         dx.get(), dgamma.get(), nullptr, c.B, c.N, c.C, c.G, false, ws.get(),
                                         nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(dx.download(), want.dx), kTolF32);
  EXPECT_LE(rel_l2(dgamma.download(), want.dgamma), kTolStats);
  EXPECT_TRUE(same_bits(dbeta.download(), pre));
  // dbeta only: dx and dgamma untouched.
  const std::vector<float> dx_before = dx.download(), dgamma_before = dgamma.download();
  ASSERT_EQ(kernels::group_norm_backward(t, dy.get(), x.get(), gamma.get(), nullptr, mean.get(), rstd.get(),
                                         nullptr, nullptr, dbeta.get(), c.B, c.N, c.C, c.G, false, ws.get(),
                                         nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(dbeta.download(), want.dbeta), kTolStats);
  EXPECT_TRUE(same_bits(dx.download(), dx_before) && same_bits(dgamma.download(), dgamma_before));
}

TEST(KernelGroupNorm, RejectsBadArguments) {
  DeviceBuffer<float> buf(64);
  void* p = buf.get();
  EXPECT_EQ(kernels::group_norm_forward(DType::F32, p, p, p, p, nullptr, nullptr, 1, 2, 30, 32, 1e-5f, false,
                                        nullptr),
            cudaErrorInvalidValue);  // C % G != 0
  EXPECT_EQ(kernels::group_norm_forward(DType::F16, p, p, p, p, nullptr, nullptr, 1, 2, 32, 32, 1e-5f, false,
                                        nullptr),
            cudaErrorInvalidValue);  // dtype
  EXPECT_EQ(kernels::group_norm_forward(DType::F32, p, p, p, p, nullptr, nullptr, 1, 0, 32, 32, 1e-5f, false,
                                        nullptr),
            cudaErrorInvalidValue);  // N = 0
}

// ---- layer norm ----

struct LnCase {
  int64_t M;
  int C;
};

// CLIP (768, 1024) and UNet transformer widths, odd M; M = 130 gives three dgamma row chunks;
// C = 33 has no vector path.
const LnCase kLnCases[] = {{5, 320}, {130, 768}, {3, 1024}, {9, 1280}, {7, 33}};

struct LnResult {
  std::vector<float> y, mean, rstd, dx, dgamma, dbeta;
};

struct LnInputs {
  std::vector<float> x, gamma, beta, dy;
};

LnInputs ln_inputs(DType t, const LnCase& c, uint32_t seed) {
  const size_t n = size_t(c.M) * c.C;
  return {rounded(t, randn(n, seed, -0.3f, 1.5f)), rounded(t, randn(size_t(c.C), seed + 1, 1.f, 0.2f)),
          rounded(t, randn(size_t(c.C), seed + 2, 0.f, 0.3f)), rounded(t, randn(n, seed + 3, 0.f, 1.f))};
}

LnResult ln_device(DType t, const LnCase& c, const LnInputs& in, const std::vector<float>& prefill,
                   size_t pad = 0) {
  const size_t n = in.x.size();
  TBuf x(t, in.x, pad), gamma(t, in.gamma), beta(t, in.beta), dy(t, in.dy, pad), y(t, n, pad), dx(t, n, pad);
  DeviceBuffer<float> mean(size_t(c.M)), rstd(size_t(c.M)), dgamma(prefill), dbeta(prefill);
  EXPECT_EQ(kernels::layer_norm_forward(t, x.get(), gamma.get(), beta.get(), y.get(), mean.get(), rstd.get(),
                                        c.M, c.C, 1e-5f, nullptr),
            cudaSuccess);
  DeviceBuffer<uint8_t> ws(std::max<size_t>(1, kernels::layer_norm_backward_workspace(c.M, c.C)));
  EXPECT_EQ(kernels::layer_norm_backward(t, dy.get(), x.get(), gamma.get(), mean.get(), rstd.get(), dx.get(),
                                         dgamma.get(), dbeta.get(), c.M, c.C, ws.get(), nullptr),
            cudaSuccess);
  return {y.download(), mean.download(), rstd.download(), dx.download(), dgamma.download(), dbeta.download()};
}

LnResult ln_cpu(const LnCase& c, const LnInputs& in, const std::vector<float>& prefill) {
  CpuOps ops;
  const Shape s{c.M, c.C};
  const Tensor x = host(in.x, s), gamma = host(in.gamma, {c.C}), beta = host(in.beta, {c.C}),
               dy = host(in.dy, s);
  Tensor y = Tensor::zeros(s), mean = Tensor::zeros({c.M}), rstd = Tensor::zeros({c.M});
  Tensor dx = Tensor::zeros(s), dgamma = host(prefill, {c.C}), dbeta = host(prefill, {c.C});
  ops.layer_norm_forward(x, gamma, beta, y, 1e-5f, &mean, &rstd);
  ops.layer_norm_backward(dy, x, gamma, mean, rstd, &dx, &dgamma, &dbeta);
  return {vec(y), vec(mean), vec(rstd), vec(dx), vec(dgamma), vec(dbeta)};
}

void expect_ln_close(DType t, const LnResult& got, const LnResult& want) {
  EXPECT_LE(rel_l2(got.y, want.y), tol_for(t)) << "y";
  EXPECT_LE(rel_l2(got.mean, want.mean), kTolStats) << "mean";
  EXPECT_LE(rel_l2(got.rstd, want.rstd), kTolStats) << "rstd";
  EXPECT_LE(rel_l2(got.dx, want.dx), tol_for(t)) << "dx";
  EXPECT_LE(rel_l2(got.dgamma, want.dgamma), kTolStats) << "dgamma";
  EXPECT_LE(rel_l2(got.dbeta, want.dbeta), kTolStats) << "dbeta";
}

void run_ln_cases(DType t) {
  uint32_t seed = 100;
  for (const LnCase& c : kLnCases) {
    SCOPED_TRACE(testing::Message() << "M=" << c.M << " C=" << c.C << " " << dtype_name(t));
    const LnInputs in = ln_inputs(t, c, seed += 10);
    const std::vector<float> pre = prefill_for(c.C);
    expect_ln_close(t, ln_device(t, c, in, pre), ln_cpu(c, in, pre));
  }
}

TEST(KernelLayerNorm, MatchesCpuF32) {
  run_ln_cases(DType::F32);
}
TEST(KernelLayerNorm, MatchesCpuBF16) {
  run_ln_cases(DType::BF16);
}

TEST(KernelLayerNorm, MisalignedPointersUseScalarPath) {
  for (DType t : {DType::F32, DType::BF16}) {
    const LnCase c{6, 320};
    SCOPED_TRACE(dtype_name(t));
    const LnInputs in = ln_inputs(t, c, 17);
    const std::vector<float> pre = prefill_for(c.C);
    expect_ln_close(t, ln_device(t, c, in, pre, /*pad=*/1), ln_cpu(c, in, pre));
  }
}

TEST(KernelLayerNorm, BitDeterministic) {
  for (DType t : {DType::F32, DType::BF16}) {
    const LnCase c{130, 768};
    const LnInputs in = ln_inputs(t, c, 23);
    const std::vector<float> pre = prefill_for(c.C);
    const LnResult a = ln_device(t, c, in, pre), b = ln_device(t, c, in, pre);
    EXPECT_TRUE(same_bits(a.y, b.y) && same_bits(a.mean, b.mean) && same_bits(a.rstd, b.rstd));
    EXPECT_TRUE(same_bits(a.dx, b.dx) && same_bits(a.dgamma, b.dgamma) && same_bits(a.dbeta, b.dbeta));
  }
}

TEST(KernelLayerNorm, OptionalOutputs) {
  const DType t = DType::BF16;
  const LnCase c{70, 320};
  const LnInputs in = ln_inputs(t, c, 29);
  const std::vector<float> pre = prefill_for(c.C);
  const LnResult want = ln_cpu(c, in, pre);
  const size_t n = in.x.size();
  TBuf x(t, in.x), gamma(t, in.gamma), beta(t, in.beta), dy(t, in.dy), y(t, n), dx(t, n);
  ASSERT_EQ(kernels::layer_norm_forward(t, x.get(), gamma.get(), beta.get(), y.get(), nullptr, nullptr, c.M,
                                        c.C, 1e-5f, nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(y.download(), want.y), kTolBF16);
  DeviceBuffer<float> mean(want.mean), rstd(want.rstd), dgamma(pre), dbeta(pre);
  DeviceBuffer<uint8_t> ws(kernels::layer_norm_backward_workspace(c.M, c.C));
  // dx only: no workspace needed, dgamma/dbeta untouched.
  ASSERT_EQ(kernels::layer_norm_backward(t, dy.get(), x.get(), gamma.get(), mean.get(), rstd.get(), dx.get(),
                                         nullptr, nullptr, c.M, c.C, nullptr, nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(dx.download(), want.dx), kTolBF16);
  // dgamma only, then dbeta only.
  ASSERT_EQ(kernels::layer_norm_backward(t, dy.get(), x.get(), gamma.get(), mean.get(), rstd.get(), nullptr,
                                         dgamma.get(), nullptr, c.M, c.C, ws.get(), nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(dgamma.download(), want.dgamma), kTolStats);
  EXPECT_TRUE(same_bits(dbeta.download(), pre));
  ASSERT_EQ(kernels::layer_norm_backward(t, dy.get(), x.get(), gamma.get(), mean.get(), rstd.get(), nullptr,
                                         nullptr, dbeta.get(), c.M, c.C, ws.get(), nullptr),
            cudaSuccess);
  EXPECT_LE(rel_l2(dbeta.download(), want.dbeta), kTolStats);
}

}  // namespace
}  // namespace db
