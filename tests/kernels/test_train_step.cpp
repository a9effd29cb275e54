// kernels/train_step.cu and philox_normals (kernels/philox.cu) against CpuOps / core/philox.h.
// Most comparisons are bit-exact because the contract promises it: AdamW (same f32 operation order, no
// FMA), sum_of_squares (same 64 Ki-element chunks summed sequentially in f64), clip_and_check (same f64
// formula), mse's dpred (one f32 subtract and multiply, as the CPU) and the Philox normals (the same
// double Box-Muller through the host libm under the emulator). Only sample_mse differs in order: both
// sides accumulate exact f64 squares (chunked tree here, sequential on the CPU) and round once to f32,
// so they agree to well under 1 ulp(f32) before that rounding: bound 1e-6 relative (measured: 0).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../emu/device_buffer.h"
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/dtype.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/kernels/train_step.h"

namespace db {
namespace {

using test::DeviceBuffer;

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// Bitwise equality, reporting the first differing element.
testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return testing::AssertionFailure() << got.size() << " vs " << want.size();
  for (size_t i = 0; i < got.size(); ++i)
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i]))
      return testing::AssertionFailure()
             << "element " << i << ": " << got[i] << " (0x" << std::hex << std::bit_cast<uint32_t>(got[i])
             << ") vs " << want[i] << " (0x" << std::bit_cast<uint32_t>(want[i]) << ")";
  return testing::AssertionSuccess();
}

std::vector<float> vec(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

// ---- MSE ----

struct MseCase {
  int S;
  int64_t n;
  std::vector<double> w;
};

// CpuOps on f32 pred (for BF16, the bf16 values widened): dpred and sample_mse.
void cpu_mse(const std::vector<float>& pred, const std::vector<float>& target, const MseCase& c,
             std::vector<float>* dpred, std::vector<float>* mse) {
  CpuOps ops;
  const Tensor p = Tensor::from_vector(pred, {c.S, c.n}), t = Tensor::from_vector(target, {c.S, c.n});
  Tensor dp = Tensor::zeros({c.S, c.n}), out = Tensor::zeros({c.S});
  ops.mse_loss_forward_backward(p, t, c.w, dp, out);
  *dpred = vec(dp);
  *mse = vec(out);
}

std::vector<float> host_k(const MseCase& c) {  // as CudaOps forms k
  std::vector<float> k;
  for (double w : c.w) k.push_back(float(2.0 * w / double(c.n)));
  return k;
}

void expect_mse_close(const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t s = 0; s < want.size(); ++s)
    EXPECT_LE(std::abs(got[s] - want[s]), 1e-6f * std::abs(want[s])) << "sample " << s;
}

// S = 2 with different weights; n = 4 x 32 x 33 latents (two 4096-element chunks, the second partial).
const MseCase kMse{2, 4 * 32 * 33, {0.75, 1.5}};

TEST(KernelTrainStepMse, F32MatchesCpu) {
  const MseCase& c = kMse;
  const size_t total = size_t(c.S * c.n);
  const std::vector<float> pred = randn(total, 1), target = randn(total, 2);
  std::vector<float> want_dp, want_mse;
  cpu_mse(pred, target, c, &want_dp, &want_mse);
  DeviceBuffer<float> p(pred), t(target), k(host_k(c)), dp(total), out(size_t(c.S));
  DeviceBuffer<char> ws(kernels::mse_loss_workspace(c.S, c.n));
  ASSERT_EQ(kernels::mse_loss_forward_backward(DType::F32, p.get(), t.get(), k.get(), dp.get(), out.get(),
                                               c.S, c.n, ws.get(), nullptr),
            cudaSuccess);
  EXPECT_TRUE(same_bits(dp.download(), want_dp));  // one f32 subtract and multiply: bit-exact
  expect_mse_close(out.download(), want_mse);
}

TEST(KernelTrainStepMse, Bf16MatchesCpu) {
  const MseCase& c = kMse;
  const size_t total = size_t(c.S * c.n);
  const std::vector<float> pred_f = randn(total, 3), target = randn(total, 4);
  std::vector<uint16_t> pred_h(total);
  std::vector<float> pred_w(total);
  for (size_t i = 0; i < total; ++i) pred_w[i] = bf16_to_f32(pred_h[i] = f32_to_bf16(pred_f[i]));
  std::vector<float> want_dp, want_mse;
  cpu_mse(pred_w, target, c, &want_dp, &want_mse);
  DeviceBuffer<uint16_t> p(pred_h), dp(total);
  DeviceBuffer<float> t(target), k(host_k(c)), out(size_t(c.S));
  DeviceBuffer<char> ws(kernels::mse_loss_workspace(c.S, c.n));
  ASSERT_EQ(kernels::mse_loss_forward_backward(DType::BF16, p.get(), t.get(), k.get(), dp.get(), out.get(),
                                               c.S, c.n, ws.get(), nullptr),
            cudaSuccess);
  // dpred: the CPU's f32 value rounded once to bf16 (round to nearest even on both sides): bit-exact.
  const std::vector<uint16_t> got = dp.download();
  for (size_t i = 0; i < total; ++i) ASSERT_EQ(got[i], f32_to_bf16(want_dp[i])) << "element " << i;
  expect_mse_close(out.download(), want_mse);
}

// ---- sum of squares ----

double cpu_sum_of_squares(const float* x, int64_t n) {
  CpuOps ops;
  const Tensor t = Tensor::from_vector(std::vector<float>(x, x + n), {n});
  Tensor out = Tensor::zeros({1}, DType::F64);
  ops.sum_of_squares(t, out);
  return out.data<double>()[0];
}

double device_sum_of_squares(const float* x, int64_t n, unsigned blocks = 0, unsigned threads = 0) {
  DeviceBuffer<char> ws(kernels::sum_of_squares_workspace(n));
  DeviceBuffer<double> out(1);
  const cudaError_t err =
      blocks ? kernels::detail::sum_of_squares_shaped(x, n, out.get(), ws.get(), blocks, threads, nullptr)
             : kernels::sum_of_squares(x, n, out.get(), ws.get(), nullptr);
  EXPECT_EQ(err, cudaSuccess);
  return out.download()[0];
}

TEST(KernelTrainStepSumOfSquares, BitsEqualCpuAndEveryLaunchShape) {
  // Magnitudes spread over 2^-10..2^10 so that a different summation order changes the low bits.
  const int64_t n_max = 3 * 65536 + 17;
  std::vector<float> host = randn(size_t(n_max) + 1, 5);
  for (size_t i = 0; i < host.size(); ++i) host[i] = std::ldexp(host[i], int(i % 21) - 10);
  DeviceBuffer<float> x(host);
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(65536), int64_t(2 * 65536 + 5), n_max}) {
    for (int offset : {0, 1}) {  // x + 1: not 16-byte aligned, the scalar path
      const double want = cpu_sum_of_squares(host.data() + offset, n);
      const float* xp = x.get() + offset;
      EXPECT_EQ(std::bit_cast<uint64_t>(device_sum_of_squares(xp, n)), std::bit_cast<uint64_t>(want))
          << "n " << n << " offset " << offset;
      for (auto [blocks, threads] : {std::pair{1u, 1u}, std::pair{2u, 32u}, std::pair{7u, 128u}})
        EXPECT_EQ(std::bit_cast<uint64_t>(device_sum_of_squares(xp, n, blocks, threads)),
                  std::bit_cast<uint64_t>(want))
            << "n " << n << " offset " << offset << " grid " << blocks << " x " << threads;
    }
  }
}

// ---- clip_and_check ----

TEST(KernelTrainStepClip, MatchesCpuIncludingNonFinite) {
  CpuOps ops;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  struct Case {
    std::vector<double> sumsq;
    int64_t bad_index;  // -1: check all finite
    float bad_value, max_norm;
  };
  const Case cases[] = {
      {{2.5, 0.75, 11.0}, -1, 0.f, 1.f},        // norm 3.8: coef < 1
      {{2.5, 0.75, 11.0}, -1, 0.f, 100.f},      // coef 1
      {{2.5, 0.75, 11.0}, -1, 0.f, 0.f},        // max_norm <= 0: coef 1
      {{2.5, 0.75, 11.0}, 777, inf, 1.f},       // inf loss: skip
      {{2.5, 0.75, 11.0}, 999, nan, 1.f},       // NaN loss (last element): skip
      {{2.5, double(inf), 1.0}, -1, 0.f, 1.f},  // inf gradient norm: skip, coef 1
      {{2.5, double(nan), 1.0}, -1, 0.f, 1.f},  // NaN gradient norm
      {{}, -1, 0.f, 1.f},                       // no partials: norm 0
  };
  for (const Case& c : cases) {
    std::vector<float> check = randn(1000, 6);
    if (c.bad_index >= 0) check[size_t(c.bad_index)] = c.bad_value;
    const int64_t ns = int64_t(c.sumsq.size());
    Tensor sumsq = Tensor::zeros({ns}, DType::F64), coef = Tensor::zeros({2});
    if (ns) std::memcpy(sumsq.data<double>(), c.sumsq.data(), c.sumsq.size() * 8);
    ops.clip_and_check(sumsq, Tensor::from_vector(check, {1000}), c.max_norm, coef);
    DeviceBuffer<double> ss(c.sumsq.empty() ? std::vector<double>{-1.0} : c.sumsq);
    DeviceBuffer<float> ch(check), out(2);
    ASSERT_EQ(kernels::clip_and_check(ss.get(), int(ns), ch.get(), 1000, c.max_norm, out.get(), nullptr),
              cudaSuccess);
    EXPECT_TRUE(same_bits(out.download(), vec(coef)))
        << "max_norm " << c.max_norm << " bad index " << c.bad_index << " coef " << coef.f32()[0];
  }
}

// ---- AdamW ----

// Several steps of CpuOps and the kernel side by side, with the working copy in `wt` (F32 / BF16 / none)
// and the buffers offset by `offset` floats (1: the scalar path). Bit-identical after every step.
void run_adamw(double beta1, DType wt, bool with_working, int offset) {
  const int64_t n = 1027;  // not a multiple of 4: a scalar tail
  CpuOps ops;
  Tensor p = Tensor::from_vector(randn(size_t(n), 7, 0.05f), {n}), m = Tensor::zeros({n}),
         v = Tensor::zeros({n});
  auto padded = [&](const std::vector<float>& h) {
    std::vector<float> x(size_t(offset), 0.f);
    x.insert(x.end(), h.begin(), h.end());
    return x;
  };
  DeviceBuffer<float> dp(padded(vec(p))), dm(padded(vec(m))), dv(padded(vec(v))), dg(size_t(n + offset)),
      dc(2);
  DeviceBuffer<float> wf(size_t(n + offset));
  DeviceBuffer<uint16_t> wb(size_t(n + offset));
  void* working = !with_working      ? nullptr
                  : wt == DType::F32 ? static_cast<void*>(wf.get() + offset)
                                     : static_cast<void*>(wb.get() + offset);
  AdamWStep a;
  a.lr = 1e-3;
  a.beta1 = beta1;
  a.weight_decay = 1e-2;
  for (int step = 1; step <= 4; ++step) {
    std::vector<float> g = randn(size_t(n), 100 + step, step == 3 ? 10.f : 0.1f);
    g[5] = 0.f;
    const Tensor gt = Tensor::from_vector(g, {n});
    // Step 3's large gradient gets clipped (coef[0] < 1), through the clip op as in the trainer.
    Tensor ss = Tensor::zeros({1}, DType::F64), coef = Tensor::zeros({2});
    ops.sum_of_squares(gt, ss);
    ops.clip_and_check(ss, Tensor::zeros({1}), 50.f, coef);
    if (step == 3) {
      ASSERT_LT(coef.f32()[0], 1.f);
    }
    a.step = step;
    ops.adamw_step(p, gt, m, v, nullptr, a, coef);
    dg.upload(padded(g));
    dc.upload(vec(coef));
    ASSERT_EQ(kernels::adamw_step(dp.get() + offset, dg.get() + offset, dm.get() + offset, dv.get() + offset,
                                  wt, working, n, kernels::adamw_scalars(a), dc.get(), nullptr),
              cudaSuccess);
    const auto tail = [&](const std::vector<float>& x) {
      return std::vector<float>(x.begin() + offset, x.end());
    };
    ASSERT_TRUE(same_bits(tail(dp.download()), vec(p))) << "master, step " << step;
    ASSERT_TRUE(same_bits(tail(dm.download()), vec(m))) << "m, step " << step;
    ASSERT_TRUE(same_bits(tail(dv.download()), vec(v))) << "v, step " << step;
    if (with_working && wt == DType::F32) {
      ASSERT_TRUE(same_bits(tail(wf.download()), vec(p))) << "step " << step;
    }
    if (with_working && wt == DType::BF16) {
      const std::vector<uint16_t> w = wb.download();
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(w[size_t(i + offset)], f32_to_bf16(p.f32()[i])) << "working " << i << ", step " << step;
    }
  }
}

TEST(KernelTrainStepAdamW, BitIdenticalToCpuNoWorkingCopy) {
  run_adamw(0.9, DType::F32, false, 0);
}
TEST(KernelTrainStepAdamW, BitIdenticalToCpuF32WorkingCopy) {
  run_adamw(0.9, DType::F32, true, 0);
}
TEST(KernelTrainStepAdamW, BitIdenticalToCpuBf16WorkingCopy) {
  run_adamw(0.9, DType::BF16, true, 0);
}
TEST(KernelTrainStepAdamW, BitIdenticalToCpuUnalignedScalarPath) {
  run_adamw(0.9, DType::BF16, true, 1);
}
TEST(KernelTrainStepAdamW, BitIdenticalToCpuLerpUpperBranch) {  // 1 - beta1 >= 0.5: the other lerp form
  run_adamw(0.3, DType::F32, false, 0);
}

TEST(KernelTrainStepAdamW, NonFiniteFlagChangesNothing) {
  const int64_t n = 513;
  const std::vector<float> p = randn(size_t(n), 8), m = randn(size_t(n), 9), v(size_t(n), 0.25f);
  const std::vector<uint16_t> w(size_t(n), 0x1234);
  DeviceBuffer<float> dp(p), dm(m), dv(v), dg(randn(size_t(n), 10)), dc(std::vector<float>{0.5f, 0.f});
  DeviceBuffer<uint16_t> dw(w);
  AdamWStep a;
  a.lr = 1e-3;
  a.step = 2;
  ASSERT_EQ(kernels::adamw_step(dp.get(), dg.get(), dm.get(), dv.get(), DType::BF16, dw.get(), n,
                                kernels::adamw_scalars(a), dc.get(), nullptr),
            cudaSuccess);
  EXPECT_TRUE(same_bits(dp.download(), p));
  EXPECT_TRUE(same_bits(dm.download(), m));
  EXPECT_TRUE(same_bits(dv.download(), v));
  EXPECT_EQ(dw.download(), w);
}

TEST(KernelTrainStepAdamW, RejectsUnsupportedWorkingDtype) {
  DeviceBuffer<float> b(8), c(std::vector<float>{1.f, 1.f});
  EXPECT_EQ(
      kernels::adamw_step(b.get(), b.get(), b.get(), b.get(), DType::I32, b.get(), 8, {}, c.get(), nullptr),
      cudaErrorInvalidValue);
}

// ---- Philox normals ----

TEST(KernelPhilox, NormalsBitExactVsCpuStream) {
  struct Case {
    uint64_t seed;
    RngPurpose purpose;
    uint32_t step, sample;
    uint64_t n;
  };
  // Odd n (a lone cosine element at the end), n = 1, and more than one 256-thread block (4 x 256 + 3).
  const Case cases[] = {{1234, RngPurpose::Noise, 7, 3, 1},
                        {1234, RngPurpose::Noise, 7, 3, 1027},
                        {0xDEADBEEFCAFEF00Dull, RngPurpose::LatentSample, 0, 1, 4 * 256 + 6},
                        {42, RngPurpose::Sampler, 123456, 9, 17}};
  for (const Case& c : cases) {
    DeviceBuffer<float> out(size_t(c.n));
    ASSERT_EQ(kernels::philox_normals(c.seed, uint32_t(c.purpose), c.step, c.sample, out.get(), c.n, nullptr),
              cudaSuccess);
    std::vector<float> want(size_t(c.n));
    PhiloxStream(c.seed, c.purpose, c.step, c.sample).normals(want.data(), c.n);
    EXPECT_TRUE(same_bits(out.download(), want)) << "seed " << c.seed << " n " << c.n;
  }
}

}  // namespace
}  // namespace db
