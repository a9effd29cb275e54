// CudaOps against CpuOps, op by op, in both working precisions (build/emu/cuda_tests on the CUDA emulator;
// build/gpu_cuda_tests on a GPU, where cuBLASLt and cuDNN replace the CPU stand-ins).
//
// Each op gets the same inputs on both backends: random host values, rounded through bf16 first in the
// BF16 mode so that both sides start from identical numbers. Compared by relative L2 error
// ||got - ref|| / ||ref|| over the whole output:
//   F32 (CudaOps::set_activation_dtype(F32)): kF32 = 1e-5. Only the order of f32 sums differs (kernels
//     reduce in blocks; the CPU row by row): ~1e-7 per sum of a few hundred terms, measured <= 2.6e-7.
//   BF16: kBF16 = 1e-2. Every activation output is rounded to bf16 (relative 2^-9 = 2e-3 per element,
//     ~1.1e-3 rel L2 for uniform rounding), and inputs of composite ops (attention's P, GEGLU's gate, the
//     GEMMs' bf16 operands) are rounded inside. Measured <= 2.4e-3 (each test prints its worst); a real
//     bug (a wrong index, a missing term) gives O(1).
// The optimizer ops are bit-identical in both modes (same operation order, no contraction).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>

#include "../../src/backend/cuda/cuda_ops.h"
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {
namespace {

constexpr double kF32 = 1e-5, kBF16 = 1e-2;  // see the file comment

class CudaOpsParity : public ::testing::TestWithParam<DType> {
 protected:
  CpuOps cpu;
  cuda::CudaOps gpu{0};
  std::mt19937 rng{1234};
  double worst = 0;
  std::string worst_what;
  void SetUp() override { gpu.set_activation_dtype(GetParam()); }
  void TearDown() override { std::printf("  worst rel L2 %.2e (%s)\n", worst, worst_what.c_str()); }
  DType act() const { return GetParam(); }
  double tol() const { return act() == DType::F32 ? kF32 : kBF16; }

  // Host f32 values in [-scale, scale), exactly representable in the working dtype.
  Tensor rand(const Shape& s, float scale = 1.f) {
    Tensor t = Tensor::empty(s);
    std::uniform_real_distribution<float> u(-scale, scale);
    for (int64_t i = 0; i < t.numel(); ++i) {
      float v = u(rng);
      t.f32()[i] = act() == DType::BF16 ? bf16_to_f32(f32_to_bf16(v)) : v;
    }
    return t;
  }
  // On the GPU backend in dtype `t` (activation dtype by default).
  Tensor dev(const Tensor& host) { return to_backend(gpu, host, act()); }
  Tensor dev32(const Tensor& host) { return to_backend(gpu, host, DType::F32); }
  Tensor empty(const Shape& s) { return gpu.empty(s, act()); }
  Tensor back(const Tensor& d) { return to_host(gpu, d, DType::F32); }

  void expect_close(const char* what, const Tensor& got_dev, const Tensor& ref, double bound = -1) {
    const Tensor got = back(got_dev);
    ASSERT_EQ(got.shape(), ref.shape()) << what;
    double num = 0, den = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
      const double d = double(got.f32()[i]) - ref.f32()[i];
      num += d * d, den += double(ref.f32()[i]) * ref.f32()[i];
    }
    const double err = std::sqrt(num / std::max(den, 1e-30));
    if (bound < 0 && err > worst) worst = err, worst_what = what;
    EXPECT_LE(err, bound < 0 ? tol() : bound) << what << " (" << dtype_name(act()) << "): rel L2 " << err;
  }
};

TEST_P(CudaOpsParity, Linear) {
  const int64_t M = 37, K = 40, N = 24;
  Tensor x = rand({M, K}), w = rand({N, K}, 0.3f), b = rand({N}), dy = rand({M, N});
  Tensor y = Tensor::empty({M, N});
  cpu.linear_forward(x, w, b, y);
  Tensor yd = empty({M, N});
  gpu.linear_forward(dev(x), dev(w), dev(b), yd);
  expect_close("linear y", yd, y);

  Tensor dx = Tensor::empty({M, K}), dw = rand({N, K}), db = rand({N});
  Tensor dxd = empty({M, K}), dwd = dev32(dw), dbd = dev32(db);  // parameter gradients accumulate
  cpu.linear_backward(dy, x, w, &dx, &dw, &db);
  gpu.linear_backward(dev(dy), dev(x), dev(w), &dxd, &dwd, &dbd);
  expect_close("linear dx", dxd, dx);
  expect_close("linear dw", dwd, dw);
  expect_close("linear db", dbd, db);
}

TEST_P(CudaOpsParity, Conv2dSameAndStridedAsymmetric) {
  struct Case {
    int H, W, C, O, k;
    Conv2dGeometry g;
  };
  const Case cases[] = {{6, 5, 8, 16, 3, Conv2dGeometry::same(1)},
                        {6, 6, 8, 8, 3, {2, 0, 1, 0, 1}},  // the VAE encoder's F.pad(0, 1, 0, 1), stride 2
                        {5, 4, 16, 8, 1, Conv2dGeometry::same(0)}};
  for (const Case& c : cases) {
    const int B = 2, Ho = c.g.out_h(c.H, c.k), Wo = c.g.out_w(c.W, c.k);
    Tensor x = rand({B, c.H, c.W, c.C}), w = rand({c.O, c.k, c.k, c.C}, 0.3f), b = rand({c.O});
    Tensor y = Tensor::empty({B, Ho, Wo, c.O});
    cpu.conv2d_forward(x, w, b, y, c.g);
    Tensor yd = empty({B, Ho, Wo, c.O});
    gpu.conv2d_forward(dev(x), dev(w), dev(b), yd, c.g);
    const std::string tag = "conv k" + std::to_string(c.k) + " s" + std::to_string(c.g.stride);
    expect_close((tag + " y").c_str(), yd, y);

    Tensor dy = rand({B, Ho, Wo, c.O}), dx = Tensor::empty(x.shape()), dw = rand(w.shape()), db = rand({c.O});
    Tensor dxd = empty(x.shape()), dwd = dev32(dw), dbd = dev32(db);
    cpu.conv2d_backward(dy, x, w, &dx, &dw, &db, c.g);
    gpu.conv2d_backward(dev(dy), dev(x), dev(w), &dxd, &dwd, &dbd, c.g);
    expect_close((tag + " dx").c_str(), dxd, dx);
    expect_close((tag + " dw").c_str(), dwd, dw);
    expect_close((tag + " db").c_str(), dbd, db);
  }
}

TEST_P(CudaOpsParity, GroupNormWithAndWithoutSilu) {
  const int B = 2, N = 12, C = 64, G = 16;
  for (Activation a : {Activation::None, Activation::SiLU}) {
    Tensor x = rand({B, N, C}, 2.f), gamma = rand({C}), beta = rand({C}), dy = rand({B, N, C});
    Tensor y = Tensor::empty(x.shape()), mean = Tensor::empty({B, G}), rstd = Tensor::empty({B, G});
    cpu.group_norm_forward(x, gamma, beta, y, G, 1e-5f, a, &mean, &rstd);
    Tensor yd = empty(x.shape()), meand = gpu.empty({B, G}), rstdd = gpu.empty({B, G});
    Tensor xd = dev(x), gd = dev(gamma), bd = dev(beta);
    gpu.group_norm_forward(xd, gd, bd, yd, G, 1e-5f, a, &meand, &rstdd);
    expect_close("group_norm y", yd, y);
    expect_close("group_norm mean", meand, mean, kF32);
    expect_close("group_norm rstd", rstdd, rstd, kF32);

    Tensor dx = Tensor::empty(x.shape()), dg = rand({C}), db = rand({C});
    Tensor dxd = empty(x.shape()), dgd = dev32(dg), dbd = dev32(db);
    cpu.group_norm_backward(dy, x, gamma, beta, mean, rstd, G, a, &dx, &dg, &db);
    gpu.group_norm_backward(dev(dy), xd, gd, bd, meand, rstdd, G, a, &dxd, &dgd, &dbd);
    expect_close("group_norm dx", dxd, dx);
    expect_close("group_norm dgamma", dgd, dg);
    expect_close("group_norm dbeta", dbd, db);
  }
}

TEST_P(CudaOpsParity, LayerNorm) {
  const int M = 21, C = 48;
  Tensor x = rand({M, C}, 2.f), gamma = rand({C}), beta = rand({C}), dy = rand({M, C});
  Tensor y = Tensor::empty(x.shape()), mean = Tensor::empty({M}), rstd = Tensor::empty({M});
  cpu.layer_norm_forward(x, gamma, beta, y, 1e-5f, &mean, &rstd);
  Tensor xd = dev(x), gd = dev(gamma), yd = empty(x.shape()), meand = gpu.empty({M}), rstdd = gpu.empty({M});
  gpu.layer_norm_forward(xd, gd, dev(beta), yd, 1e-5f, &meand, &rstdd);
  expect_close("layer_norm y", yd, y);
  Tensor dx = Tensor::empty(x.shape()), dg = rand({C}), db = rand({C});
  Tensor dxd = empty(x.shape()), dgd = dev32(dg), dbd = dev32(db);
  cpu.layer_norm_backward(dy, x, gamma, mean, rstd, &dx, &dg, &db);
  gpu.layer_norm_backward(dev(dy), xd, gd, meand, rstdd, &dxd, &dgd, &dbd);
  expect_close("layer_norm dx", dxd, dx);
  expect_close("layer_norm dgamma", dgd, dg);
  expect_close("layer_norm dbeta", dbd, db);
}

TEST_P(CudaOpsParity, AttentionSelfCrossCausal) {
  struct Case {
    int Tq, Tk, H, D;
    bool causal;
  };
  for (const Case& c : {Case{17, 17, 2, 8, false}, Case{9, 13, 2, 16, false}, Case{11, 11, 2, 8, true}}) {
    const int B = 2, HD = c.H * c.D;
    AttentionParams p;
    p.heads = c.H, p.causal = c.causal;
    Tensor q = rand({B, c.Tq, HD}, 2.f), k = rand({B, c.Tk, HD}, 2.f), v = rand({B, c.Tk, HD});
    Tensor o = Tensor::empty(q.shape()), lse = Tensor::empty({B, c.H, c.Tq});
    cpu.attention_forward(q, k, v, o, p, &lse);
    Tensor qd = dev(q), kd = dev(k), vd = dev(v), od = empty(q.shape()), lsed = gpu.empty({B, c.H, c.Tq});
    gpu.attention_forward(qd, kd, vd, od, p, &lsed);
    expect_close("attention out", od, o);
    expect_close("attention lse", lsed, lse);

    Tensor dout = rand(q.shape());
    Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
    cpu.attention_backward(dout, q, k, v, o, lse, p, dq, dk, dv);
    Tensor dqd = empty(q.shape()), dkd = empty(k.shape()), dvd = empty(v.shape());
    gpu.attention_backward(dev(dout), qd, kd, vd, od, lsed, p, dqd, dkd, dvd);
    expect_close("attention dq", dqd, dq);
    expect_close("attention dk", dkd, dk);
    expect_close("attention dv", dvd, dv);
  }
}

TEST_P(CudaOpsParity, ActivationsAndGeglu) {
  for (Activation a : {Activation::SiLU, Activation::GELU, Activation::QuickGELU}) {
    Tensor x = rand({5, 33}, 4.f), dy = rand({5, 33});
    Tensor y = Tensor::empty(x.shape()), dx = Tensor::empty(x.shape());
    cpu.activation_forward(x, y, a);
    cpu.activation_backward(x, dy, dx, a);
    Tensor xd = dev(x), yd = empty(x.shape()), dxd = empty(x.shape());
    gpu.activation_forward(xd, yd, a);
    gpu.activation_backward(xd, dev(dy), dxd, a);
    expect_close("activation y", yd, y);
    expect_close("activation dx", dxd, dx);
  }
  Tensor x = rand({7, 2 * 24}, 3.f), dy = rand({7, 24});
  Tensor y = Tensor::empty({7, 24}), dx = Tensor::empty(x.shape());
  cpu.geglu_forward(x, y);
  cpu.geglu_backward(x, dy, dx);
  Tensor xd = dev(x), yd = empty({7, 24}), dxd = empty(x.shape());
  gpu.geglu_forward(xd, yd);
  gpu.geglu_backward(xd, dev(dy), dxd);
  expect_close("geglu y", yd, y);
  expect_close("geglu dx", dxd, dx);
}

TEST_P(CudaOpsParity, ArithmeticAndLayout) {
  Tensor a = rand({3, 4, 10}), b = rand({3, 4, 10}), v = rand({3, 10});
  Tensor y = Tensor::empty(a.shape());
  cpu.add_forward(a, b, y, 0.5f, -2.f);
  Tensor yd = empty(a.shape());
  gpu.add_forward(dev(a), dev(b), yd, 0.5f, -2.f);
  expect_close("add", yd, y);

  Tensor xb = a.clone(), xbd = dev(a);
  cpu.add_broadcast_forward(xb, v);
  gpu.add_broadcast_forward(xbd, dev(v));
  expect_close("add_broadcast", xbd, xb);
  Tensor dv = Tensor::empty({3, 10}), dvd = empty({3, 10});
  cpu.add_broadcast_backward(b, dv);
  gpu.add_broadcast_backward(dev(b), dvd);
  expect_close("add_broadcast_backward", dvd, dv);

  cpu.scale_forward(a, y, 1.75f);
  gpu.scale_forward(dev(a), yd, 1.75f);
  expect_close("scale", yd, y);

  Tensor c = rand({3, 4, 6}), cat = Tensor::empty({3, 4, 16}), catd = empty({3, 4, 16});
  cpu.concat_channels_forward(a, c, cat);
  gpu.concat_channels_forward(dev(a), dev(c), catd);
  expect_close("concat", catd, cat);
  Tensor da = Tensor::empty(a.shape()), dc = Tensor::empty(c.shape());
  Tensor dad = empty(a.shape()), dcd = empty(c.shape());
  Tensor g = rand({3, 4, 16});
  cpu.concat_channels_backward(g, &da, &dc);
  gpu.concat_channels_backward(dev(g), &dad, &dcd);
  expect_close("concat da", dad, da);
  expect_close("concat db", dcd, dc);

  Tensor x = rand({2, 3, 5, 8}), up = Tensor::empty({2, 6, 10, 8}), upd = empty({2, 6, 10, 8});
  cpu.upsample_nearest2x_forward(x, up);
  gpu.upsample_nearest2x_forward(dev(x), upd);
  expect_close("upsample", upd, up);
  Tensor dup = rand({2, 6, 10, 8}), dx = Tensor::empty(x.shape()), dxd = empty(x.shape());
  cpu.upsample_nearest2x_backward(dup, dx);
  gpu.upsample_nearest2x_backward(dev(dup), dxd);
  expect_close("upsample backward", dxd, dx);
}

TEST_P(CudaOpsParity, Embeddings) {
  Tensor t = Tensor::from_vector({0.f, 17.f, 999.f}, {3});
  TimestepEmbeddingParams p;
  p.downscale_freq_shift = 1.f;
  Tensor e = Tensor::empty({3, 32}), ed = empty({3, 32});
  cpu.timestep_embedding_forward(t, e, p);
  gpu.timestep_embedding_forward(dev32(t), ed, p);
  // sin/cos of arguments up to 999 rad: f32 argument reduction differs by ~1 ulp of 999 (6e-5 rad).
  expect_close("timestep_embedding", ed, e, act() == DType::F32 ? 1e-4 : kBF16);

  Tensor ids = Tensor::empty({2, 5}, DType::I32);
  const int32_t idv[10] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};  // repeated ids: the backward sums them
  std::memcpy(ids.raw(), idv, sizeof idv);
  Tensor table = rand({10, 12}), y = Tensor::empty({2, 5, 12}), yd = empty({2, 5, 12});
  Tensor idsd = to_backend(gpu, ids, DType::I32);
  cpu.embedding_forward(ids, table, y);
  gpu.embedding_forward(idsd, dev(table), yd);
  expect_close("embedding", yd, y);
  Tensor dy = rand({2, 5, 12}), dt = rand({10, 12}), dtd = dev32(dt);
  cpu.embedding_backward(ids, dy, dt);
  gpu.embedding_backward(idsd, dev(dy), dtd);
  expect_close("embedding backward", dtd, dt);
}

TEST_P(CudaOpsParity, BadTokenIdIsReportedAtSynchronize) {
  Tensor ids = Tensor::empty({3}, DType::I32);
  const int32_t idv[3] = {1, 12, 2};
  std::memcpy(ids.raw(), idv, sizeof idv);
  Tensor y = empty({3, 4});
  gpu.embedding_forward(to_backend(gpu, ids, DType::I32), dev(rand({10, 4})), y);
  try {
    gpu.synchronize();
    FAIL() << "an id outside the vocabulary was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
  gpu.synchronize();  // reported once, then cleared
}

TEST_P(CudaOpsParity, MseLossAndOptimizerOps) {
  const int S = 3, n = 50;
  Tensor pred = rand({S, n}), target = Tensor::empty({S, n});
  {
    std::uniform_real_distribution<float> u(-1, 1);
    for (int64_t i = 0; i < target.numel(); ++i) target.f32()[i] = u(rng);
  }
  const std::vector<double> w = {1.0, 0.5, 2.0};
  Tensor dpred = Tensor::empty(pred.shape()), smse = Tensor::empty({S});
  cpu.mse_loss_forward_backward(pred, target, w, dpred, smse);
  Tensor dpredd = empty(pred.shape()), smsed = gpu.empty({S});
  gpu.mse_loss_forward_backward(dev(pred), dev32(target), w, dpredd, smsed);
  expect_close("mse dpred", dpredd, dpred);
  expect_close("mse per sample", smsed, smse, 1e-6);

  // AdamW: bit-identical to the CPU's, including the clip coefficient and the bf16 working copy.
  const int64_t m = 1000;
  Tensor master = rand({m}), grad = rand({m}, 0.1f), mom = rand({m}, 0.01f), var = rand({m}, 0.001f);
  for (int64_t i = 0; i < m; ++i) var.f32()[i] = std::abs(var.f32()[i]);
  Tensor ss = Tensor::empty({1}, DType::F64), coef = Tensor::empty({2});
  cpu.sum_of_squares(grad, ss);
  cpu.clip_and_check(ss, grad, 0.5f, coef);
  Tensor gradd = dev32(grad), ssd = gpu.empty({1}, DType::F64), coefd = gpu.empty({2});
  gpu.sum_of_squares(gradd, ssd);
  gpu.clip_and_check(ssd, gradd, 0.5f, coefd);
  const Tensor ss_back = to_host(gpu, ssd), coef_back = to_host(gpu, coefd);
  EXPECT_EQ(ss_back.data<double>()[0], ss.data<double>()[0]);
  EXPECT_EQ(coef_back.f32()[0], coef.f32()[0]);
  EXPECT_EQ(coef_back.f32()[1], 1.f);

  AdamWStep st;
  st.lr = 1e-3, st.step = 3;
  Tensor masterd = dev32(master), momd = dev32(mom), vard = dev32(var), working = gpu.empty({m}, act());
  cpu.adamw_step(master, grad, mom, var, nullptr, st, coef);
  gpu.adamw_step(masterd, gradd, momd, vard, &working, st, coefd);
  const Tensor got = to_host(gpu, masterd), got_m = to_host(gpu, momd), got_v = to_host(gpu, vard);
  EXPECT_EQ(std::memcmp(got.raw(), master.raw(), m * 4), 0) << "AdamW master weights differ in bits";
  EXPECT_EQ(std::memcmp(got_m.raw(), mom.raw(), m * 4), 0) << "AdamW m differs in bits";
  EXPECT_EQ(std::memcmp(got_v.raw(), var.raw(), m * 4), 0) << "AdamW v differs in bits";
  expect_close("working copy", working, master, act() == DType::F32 ? 0.0 : 4e-3);
}

INSTANTIATE_TEST_SUITE_P(Precision, CudaOpsParity, ::testing::Values(DType::F32, DType::BF16),
                         [](const ::testing::TestParamInfo<DType>& i) {
                           return std::string(dtype_name(i.param));
                         });

}  // namespace
}  // namespace db
