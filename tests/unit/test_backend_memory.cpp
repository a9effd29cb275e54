// Backend.*: the CPU backend's memory (HostPool, fill/copy/cast/upload/download, to_backend/to_host)
// and its training-step loss op.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/backend/host_pool.h"
#include "dreambooth/core/error.h"

using namespace db;

TEST(Backend, PoolReusesFreedBlocksAndCounts) {
  HostPool pool;
  void* first = nullptr;
  {
    Tensor a = pool.empty({1000}, DType::F32);  // 4000 bytes -> the 4096-byte class
    first = a.raw();
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw()) % 64, 0u);
    EXPECT_EQ(pool.stats().in_use, 4096u);
    Tensor view = a.slice(10, 20);  // a view keeps the block
    a = Tensor();
    EXPECT_EQ(pool.stats().in_use, 4096u);
  }
  EXPECT_EQ(pool.stats().in_use, 0u);
  EXPECT_EQ(pool.stats().peak, 4096u);
  Tensor b = pool.empty({1010}, DType::F32);  // same class: the cached block comes back
  EXPECT_EQ(b.raw(), first);
  EXPECT_EQ(pool.stats().reserved, 4096u);
  Tensor c = pool.empty({10}, DType::BF16);
  EXPECT_EQ(pool.stats().reserved, 4096u + 64u);
  pool.reset_peak();
  EXPECT_EQ(pool.stats().peak, pool.stats().in_use);
  c = Tensor();
  pool.release_cached();
  EXPECT_EQ(pool.stats().reserved, 4096u);
  EXPECT_THROW(pool.empty({-1}, DType::F32), Error);
}

TEST(Backend, PoolTensorsOutliveTheBackend) {
  Tensor t;
  {
    CpuOps ops;
    t = ops.empty({3}, DType::F32);
    ops.fill(t, 2.f);
  }
  EXPECT_EQ(t.f32()[2], 2.f);  // the pool's state lives as long as its blocks
}

TEST(Backend, FillCopyCastRoundTrip) {
  CpuOps ops;
  Tensor a = ops.empty({5}, DType::F32);
  const std::vector<float> host = {1.f, -2.5f, 3.14159f, 1e-3f, 65504.f};
  ops.upload(host.data(), a);
  Tensor h = ops.empty({5}, DType::BF16);
  ops.cast(a, h);
  std::vector<uint16_t> raw(5);
  ops.download(h, raw.data());
  ops.synchronize();
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(raw[i], f32_to_bf16(host[i])) << i;  // round to nearest even
  Tensor back = ops.empty({5}, DType::F32);
  ops.cast(h, back);
  EXPECT_EQ(back.f32()[2], bf16_to_f32(f32_to_bf16(3.14159f)));
  Tensor c = ops.empty({5}, DType::F32);
  ops.copy(a, c);
  EXPECT_EQ(std::memcmp(c.raw(), host.data(), 20), 0);
  ops.fill(h, 1.5f);
  EXPECT_EQ(h.data<uint16_t>()[4], f32_to_bf16(1.5f));
  Tensor d = ops.empty({2}, DType::F64);
  ops.fill(d, 0.25f);
  EXPECT_EQ(d.data<double>()[1], 0.25);
  Tensor wrong = ops.empty({4}, DType::F32);
  EXPECT_THROW(ops.copy(a, wrong), Error);
  Tensor ids = ops.empty({5}, DType::I32);
  EXPECT_THROW(ops.cast(a, ids), Error);
}

TEST(Backend, ToBackendSharesHostMemoryOnTheCpu) {
  CpuOps ops;
  Tensor host = Tensor::from_vector({1.f, 2.f}, {2});
  EXPECT_EQ(to_backend(ops, host).raw(), host.raw());     // no copy on the CPU
  const Tensor b16 = to_backend(ops, host, DType::BF16);  // a converted copy
  EXPECT_EQ(b16.dtype(), DType::BF16);
  const Tensor f = to_host(ops, b16, DType::F32);
  EXPECT_EQ(f.f32()[1], 2.f);
}

// Per-sample MSE and its gradient, against a direct computation.
TEST(Backend, MseLossPerSample) {
  CpuOps ops;
  const int64_t S = 2, n = 6;
  Tensor pred = Tensor::empty({S, 1, 2, 3}), target = Tensor::empty({S, 1, 2, 3});
  for (int64_t i = 0; i < S * n; ++i) {
    pred.f32()[i] = float(std::sin(double(i)));
    target.f32()[i] = float(std::cos(double(i)));
  }
  Tensor dpred = ops.empty(pred.shape()), mse = ops.empty({S});
  const std::vector<double> w = {0.5, 2.0};
  ops.mse_loss_forward_backward(pred, target, w, dpred, mse);
  for (int64_t s = 0; s < S; ++s) {
    double acc = 0;
    for (int64_t i = s * n; i < (s + 1) * n; ++i) {
      const float d = pred.f32()[i] - target.f32()[i];
      acc += double(d) * d;
      EXPECT_FLOAT_EQ(dpred.f32()[i], float(2 * w[size_t(s)] / n) * d);
    }
    EXPECT_FLOAT_EQ(mse.f32()[s], float(acc / n));
  }
  const std::vector<double> bad = {1.0};
  EXPECT_THROW(ops.mse_loss_forward_backward(pred, target, bad, dpred, mse), Error);
}
