// Two CudaOps on two devices, used alternately from one thread (what --gpus-per-rank 2 does): each must
// make its own device current before every launch, copy and allocation. On the emulator
// (DB_EMU_DEVICES forced to 2 here, peer access left off) a kernel launched into the other device's
// stream fails with cudaErrorInvalidResourceHandle and a kernel touching the other device's memory throws
// peer-access, so a missing switch fails this test; on a GPU it needs two devices and is skipped with one.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "../../src/backend/cuda/cuda_ops.h"
#include "dreambooth/backend/ops.h"
#include "dreambooth/core/error.h"
#ifdef DB_EMU
#include "dreambooth/emu/device_memory.h"
#include "dreambooth/emu/options.h"
#endif

namespace db {
namespace {

#ifdef DB_EMU
emu::Options two_devices() {
  emu::Options o = emu::options();
  o.devices = 2;
  return o;
}
#endif

class CudaTwoDevices : public ::testing::Test {
 protected:
#ifdef DB_EMU
  emu::ScopedOptions scoped{two_devices()};
#endif
  void SetUp() override {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 2) GTEST_SKIP() << "needs two CUDA devices";
  }
};

// A few layers and an optimizer step on each backend, op by op in turn (so every op starts with the
// other backend's device current); the updated weights of each.
std::vector<std::vector<float>> interleaved_ops(const std::vector<Ops*>& backends, const Tensor& x_host,
                                                const Tensor& w_host) {
  struct Side {
    Tensor x, w, b, y, z, dz, dw, db, m, v, coef;
  };
  std::vector<Side> sides(backends.size());
  auto each = [&](auto&& f) {
    for (size_t i = 0; i < backends.size(); ++i) f(*backends[i], sides[i]);
  };
  const Shape ys = {x_host.dim(0), w_host.dim(0)};
  each([&](Ops& o, Side& s) {
    s.x = to_backend(o, x_host);
    s.w = to_backend(o, w_host);
  });
  each([&](Ops& o, Side& s) {
    s.b = o.empty({w_host.dim(0)});
    s.y = o.empty(ys);
    s.z = o.empty(ys);
    s.dz = o.empty(ys);
    s.dw = o.empty(w_host.shape());
    s.db = o.empty(s.b.shape());
    s.m = o.empty(w_host.shape());
    s.v = o.empty(w_host.shape());
    s.coef = o.empty({2});
  });
  each([](Ops& o, Side& s) { o.fill(s.b, 0.25f); });
  each([](Ops& o, Side& s) { o.linear_forward(s.x, s.w, s.b, s.y); });
  each([](Ops& o, Side& s) { o.activation_forward(s.y, s.z, Activation::SiLU); });
  each([](Ops& o, Side& s) { o.activation_backward(s.y, s.z, s.dz, Activation::SiLU); });
  each([](Ops& o, Side& s) {
    for (Tensor* t : {&s.dw, &s.db, &s.m, &s.v}) o.fill(*t, 0.f);
    o.fill(s.coef, 1.f);
  });
  each([](Ops& o, Side& s) { o.linear_backward(s.dz, s.x, s.w, nullptr, &s.dw, &s.db); });
  AdamWStep step;
  step.lr = 1e-3;
  step.step = 1;
  each([&](Ops& o, Side& s) { o.adamw_step(s.w, s.dw, s.m, s.v, nullptr, step, s.coef); });
  std::vector<std::vector<float>> out(backends.size(), std::vector<float>(size_t(w_host.numel())));
  for (size_t i = 0; i < backends.size(); ++i) backends[i]->download(sides[i].w, out[i].data());
  each([](Ops& o, Side&) { o.synchronize(); });
  return out;
}

TEST_F(CudaTwoDevices, AlternatingBackendsEachRunOnTheirOwnDevice) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  Tensor x = Tensor::empty({8, 32}), w = Tensor::empty({16, 32});
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = u(rng);
  for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = u(rng);
  auto gpu0 = std::make_unique<cuda::CudaOps>(0);
  auto gpu1 = std::make_unique<cuda::CudaOps>(1);
  gpu0->set_activation_dtype(DType::F32);
  gpu1->set_activation_dtype(DType::F32);
#ifdef DB_EMU
  const size_t before1 = emu::live_allocation_bytes(1);
#endif
  const auto r = interleaved_ops({gpu1.get(), gpu0.get()}, x, w);
  EXPECT_EQ(r[0], r[1]);  // the same kernels on the same inputs
  for (float v : r[0]) ASSERT_TRUE(std::isfinite(v));
#ifdef DB_EMU
  EXPECT_GT(emu::live_allocation_bytes(1), before1);  // gpu1's pool is on device 1
#endif
  gpu1.reset();  // destroyed while device 0 is current
  gpu0.reset();
}

TEST_F(CudaTwoDevices, CopyFromTheOtherDeviceBothWays) {
  cuda::CudaOps gpu0(0), gpu1(1);
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i) * 0.5f - 3.f;
  Tensor a = gpu0.empty({1000}), b = gpu1.empty({1000}), c = gpu0.empty({1000});
  gpu0.upload(x.data(), a);
  gpu1.copy_from(gpu0, a, b);  // device 0 -> 1
  gpu1.scale_forward(b, b, 2.f);
  gpu0.copy_from(gpu1, b, c);  // and back
  std::vector<float> y(1000);
  gpu0.download(c, y.data());
  gpu0.synchronize();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], 2.f * x[i]) << i;
  Tensor wrong = gpu0.empty({999});
  EXPECT_THROW(gpu1.copy_from(gpu0, wrong, b), Error);
}

}  // namespace
}  // namespace db
