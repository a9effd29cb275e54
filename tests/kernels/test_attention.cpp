// The generic attention path (kernels/attention_generic.cu) and the public launchers (kernels/attention.cu)
// against CpuOps attention_forward / attention_backward on random inputs.
//
// Tolerances (relative L2 error, ||got - ref|| / ||ref||):
//   F32: kF32Tol = 2e-5. Both sides sum the same products in f32 in a different order (online softmax vs
//        two-pass, per-thread dot products vs GEMM blocking); measured worst case about 1e-6 (the test prints
//        the errors), so 2e-5 leaves room and still fails for any wrong element (a wrong mask or scale is
//        an error of order 1).
//   BF16: kBf16Tol = 4e-3. The inputs are rounded to bf16 once and the CPU reference is given the same
//        rounded values, so the only bf16 rounding the reference lacks is the output's: at most 2^-9
//        relative per element, i.e. a relative L2 error below 2^-9 ~ 2e-3, doubled for margin. lse is f32
//        in both dtypes: kF32Tol.
//   The public launchers' test (KernelAttentionPublic) holds for whichever path serves the call: BF16 at
//   kPublicBf16Tol = 1e-2, the tensor-core path's tolerance (it also rounds P and dS to bf16 for its
//   MMAs; test_attention_mma.cpp measured up to 2.5e-3).
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/kernels/attention.h"
#include "dreambooth/kernels/attention_paths.h"
#include "../emu/device_buffer.h"

namespace db {
namespace {

using test::DeviceBuffer;

constexpr double kF32Tol = 2e-5;
constexpr double kBf16Tol = 4e-3;
constexpr double kPublicBf16Tol = 1e-2;

std::vector<float> random_vec(size_t n, uint32_t seed, float amp) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-amp, amp);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

// A device tensor of dtype t (F32 or BF16) with f32 host copies in and out.
class DevTensor {
 public:
  DevTensor(DType t, size_t n) : t_(t), n_(n), buf_(n * dtype_size(t)) {}
  DevTensor(DType t, const std::vector<float>& host) : DevTensor(t, host.size()) { upload(host); }
  void* get() const { return buf_.get(); }
  void upload(const std::vector<float>& host) {
    std::vector<uint8_t> bytes(n_ * dtype_size(t_));
    if (t_ == DType::F32) {
      std::memcpy(bytes.data(), host.data(), bytes.size());
    } else {
      auto* b = reinterpret_cast<__nv_bfloat16*>(bytes.data());
      for (size_t i = 0; i < n_; ++i) b[i] = __float2bfloat16(host[i]);
    }
    buf_.upload(bytes);
  }
  std::vector<float> download() const {
    const std::vector<uint8_t> bytes = buf_.download();
    std::vector<float> host(n_);
    if (t_ == DType::F32) {
      std::memcpy(host.data(), bytes.data(), bytes.size());
    } else {
      const auto* b = reinterpret_cast<const __nv_bfloat16*>(bytes.data());
      for (size_t i = 0; i < n_; ++i) host[i] = __bfloat162float(b[i]);
    }
    return host;
  }
  std::vector<uint8_t> raw() const { return buf_.download(); }

 private:
  DType t_;
  size_t n_;
  DeviceBuffer<uint8_t> buf_;
};

// What the device sees: the values rounded to t's precision.
std::vector<float> rounded(DType t, std::vector<float> v) {
  if (t == DType::BF16)
    for (float& x : v) x = __bfloat162float(__float2bfloat16(x));
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(got[i]) - ref[i];
    num += d * d;
    den += double(ref[i]) * ref[i];
  }
  if (!std::isfinite(num)) return INFINITY;
  return std::sqrt(num / std::max(den, 1e-30));
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return std::isfinite(m) ? m : INFINITY;
}

struct Case {
  DType t;
  int B, H, Tq, Tk, D;
  bool causal;
  std::string name;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.name;
}

std::string case_name(DType t, int B, int H, int Tq, int Tk, int D, bool causal) {
  return std::string(t == DType::F32 ? "f32" : "bf16") + "_d" + std::to_string(D) + "_B" + std::to_string(B) +
         "H" + std::to_string(H) + "_q" + std::to_string(Tq) + "k" + std::to_string(Tk) +
         (causal ? "_causal" : "");
}

std::vector<Case> cases(bool backward) {
  struct Shape {
    int B, H, Tq, Tk, D;
    bool causal;
  };
  std::vector<Shape> shapes = {
      {2, 2, 64, 64, 8, false},     // self, bucket 32, several (b, h)
      {1, 2, 100, 100, 40, false},  // self, bucket 64, a partial second block
      {2, 1, 64, 77, 64, false},    // cross (77 text tokens)
      {1, 2, 77, 77, 80, true},     // causal over two blocks, bucket 128
      {1, 1, 1, 257, 160, false},   // one query, K/V tiles with a tail, bucket 256
      {1, 1, 257, 100, 64, false},  // query tail
      {1, 1, 100, 1, 40, false},    // one key
      {1, 2, 33, 20, 20, false},    // D % 8 != 0: bf16 takes the scalar staging path
      {1, 1, 40, 40, 3, true},      // odd D: scalar staging in both dtypes
  };
  if (!backward) {
    shapes.push_back({1, 1, 64, 64, 512, false});  // the VAE's head dim (tile of 8 keys)
    shapes.push_back({1, 1, 33, 77, 512, false});
  }
  std::vector<Case> out;
  for (DType t : {DType::F32, DType::BF16})
    for (const Shape& s : shapes)
      out.push_back(
          {t, s.B, s.H, s.Tq, s.Tk, s.D, s.causal, case_name(t, s.B, s.H, s.Tq, s.Tk, s.D, s.causal)});
  return out;
}

float scale_for(int D) {
  return 0.9f / std::sqrt(float(D));
}  // not the default: a lost scale shows

// Host inputs of a case: q, dout [B, Tq, H*D]; k, v [B, Tk, H*D], in [-2, 2] so the softmax is peaked.
struct Inputs {
  std::vector<float> q, k, v, dout;
};
Inputs make_inputs(const Case& c, uint32_t seed) {
  const size_t nq = size_t(c.B) * c.Tq * c.H * c.D, nk = size_t(c.B) * c.Tk * c.H * c.D;
  return {rounded(c.t, random_vec(nq, seed, 2.f)), rounded(c.t, random_vec(nk, seed + 1, 2.f)),
          rounded(c.t, random_vec(nk, seed + 2, 2.f)), rounded(c.t, random_vec(nq, seed + 3, 1.f))};
}

struct CpuResult {
  std::vector<float> out, lse, dq, dk, dv;
};
CpuResult cpu_attention(const Case& c, const Inputs& in, bool backward, const std::vector<float>* out_used) {
  CpuOps ops;
  const int64_t HD = int64_t(c.H) * c.D;
  AttentionParams p;
  p.heads = c.H;
  p.scale = scale_for(c.D);
  p.causal = c.causal;
  Tensor q = Tensor::from_vector(in.q, {c.B, c.Tq, HD}), k = Tensor::from_vector(in.k, {c.B, c.Tk, HD}),
         v = Tensor::from_vector(in.v, {c.B, c.Tk, HD});
  Tensor out = Tensor::zeros({c.B, c.Tq, HD}), lse = Tensor::zeros({c.B, c.H, c.Tq});
  ops.attention_forward(q, k, v, out, p, &lse);
  CpuResult r;
  r.out.assign(out.f32(), out.f32() + out.numel());
  r.lse.assign(lse.f32(), lse.f32() + lse.numel());
  if (!backward) return r;
  Tensor o = Tensor::from_vector(*out_used, {c.B, c.Tq, HD}),
         dout = Tensor::from_vector(in.dout, {c.B, c.Tq, HD});
  Tensor dq = Tensor::zeros({c.B, c.Tq, HD}), dk = Tensor::zeros({c.B, c.Tk, HD}),
         dv = Tensor::zeros({c.B, c.Tk, HD});
  ops.attention_backward(dout, q, k, v, o, lse, p, dq, dk, dv);
  r.dq.assign(dq.f32(), dq.f32() + dq.numel());
  r.dk.assign(dk.f32(), dk.f32() + dk.numel());
  r.dv.assign(dv.f32(), dv.f32() + dv.numel());
  return r;
}

double tol(DType t) {
  return t == DType::F32 ? kF32Tol : kBf16Tol;
}

// ---- forward ----
class KernelAttentionGenericForward : public testing::TestWithParam<Case> {};

TEST_P(KernelAttentionGenericForward, MatchesCpu) {
  const Case& c = GetParam();
  const Inputs in = make_inputs(c, 11);
  const CpuResult ref = cpu_attention(c, in, false, nullptr);
  DevTensor q(c.t, in.q), k(c.t, in.k), v(c.t, in.v), out(c.t, in.q.size());
  DeviceBuffer<float> lse(size_t(c.B) * c.H * c.Tq);
  ASSERT_EQ(kernels::attention_generic_forward(c.t, q.get(), k.get(), v.get(), out.get(), lse.get(), c.B, c.H,
                                               c.Tq, c.Tk, c.D, scale_for(c.D), c.causal, nullptr, nullptr),
            cudaSuccess);
  const double e_out = rel_l2(out.download(), ref.out), e_lse = rel_l2(lse.download(), ref.lse);
  EXPECT_LE(e_out, tol(c.t)) << "out";
  EXPECT_LE(e_lse, kF32Tol) << "lse";
  std::printf("  %s: out %.2e lse %.2e\n", c.name.c_str(), e_out, e_lse);
}

INSTANTIATE_TEST_SUITE_P(, KernelAttentionGenericForward, testing::ValuesIn(cases(false)),
                         [](const testing::TestParamInfo<Case>& i) { return i.param.name; });

// ---- backward (given the CPU's lse and the output as the device holds it) ----
class KernelAttentionGenericBackward : public testing::TestWithParam<Case> {};

TEST_P(KernelAttentionGenericBackward, MatchesCpu) {
  const Case& c = GetParam();
  const Inputs in = make_inputs(c, 23);
  const CpuResult fwd = cpu_attention(c, in, false, nullptr);
  const std::vector<float> o = rounded(c.t, fwd.out);
  const CpuResult ref = cpu_attention(c, in, true, &o);
  DevTensor q(c.t, in.q), k(c.t, in.k), v(c.t, in.v), out(c.t, o), dout(c.t, in.dout);
  DevTensor dq(c.t, in.q.size()), dk(c.t, in.k.size()), dv(c.t, in.k.size());
  DeviceBuffer<float> lse(fwd.lse);
  DeviceBuffer<uint8_t> ws(
      std::max<size_t>(1, kernels::attention_generic_backward_workspace(c.B, c.H, c.Tq, c.Tk, c.D)));
  ASSERT_EQ(kernels::attention_generic_backward(c.t, dout.get(), q.get(), k.get(), v.get(), out.get(),
                                                lse.get(), dq.get(), dk.get(), dv.get(), c.B, c.H, c.Tq, c.Tk,
                                                c.D, scale_for(c.D), c.causal, ws.get(), nullptr),
            cudaSuccess);
  const double e_dq = rel_l2(dq.download(), ref.dq), e_dk = rel_l2(dk.download(), ref.dk),
               e_dv = rel_l2(dv.download(), ref.dv);
  if (c.Tk == 1) {
    // One key: p = 1 and dP = dO.v = Dr, so dS, dq and dk are exactly 0 in exact arithmetic and the
    // reference holds only rounding noise (~1e-7); a relative error means nothing there.
    EXPECT_LE(max_abs(dq.download()), 1e-5) << "dq";
    EXPECT_LE(max_abs(dk.download()), 1e-5) << "dk";
  } else {
    EXPECT_LE(e_dq, tol(c.t)) << "dq";
    EXPECT_LE(e_dk, tol(c.t)) << "dk";
  }
  EXPECT_LE(e_dv, tol(c.t)) << "dv";
  std::printf("  %s: dq %.2e dk %.2e dv %.2e\n", c.name.c_str(), e_dq, e_dk, e_dv);
}

INSTANTIATE_TEST_SUITE_P(, KernelAttentionGenericBackward, testing::ValuesIn(cases(true)),
                         [](const testing::TestParamInfo<Case>& i) { return i.param.name; });

// ---- the public launchers, bit-determinism, argument checks ----

// Forward then backward through attention.h twice: the same bytes both times (no atomics, fixed order).
TEST(KernelAttentionPublic, ForwardBackwardMatchCpuAndAreBitDeterministic) {
  for (DType t : {DType::F32, DType::BF16}) {
    const Case c{t, 2, 2, 77, 77, 40, true, case_name(t, 2, 2, 77, 77, 40, true)};
    const double public_tol = t == DType::F32 ? kF32Tol : kPublicBf16Tol;
    const Inputs in = make_inputs(c, 5);
    const size_t nq = in.q.size(), nk = in.k.size(), nl = size_t(c.B) * c.H * c.Tq;
    DevTensor q(t, in.q), k(t, in.k), v(t, in.v), dout(t, in.dout);
    std::vector<uint8_t> first[5];
    for (int run = 0; run < 2; ++run) {
      DevTensor out(t, nq), dq(t, nq), dk(t, nk), dv(t, nk);
      DeviceBuffer<float> lse(nl);
      DeviceBuffer<uint8_t> wsf(
          std::max<size_t>(1, kernels::attention_forward_workspace(c.B, c.H, c.Tq, c.Tk, c.D)));
      DeviceBuffer<uint8_t> wsb(
          std::max<size_t>(1, kernels::attention_backward_workspace(c.B, c.H, c.Tq, c.Tk, c.D)));
      ASSERT_EQ(kernels::attention_forward(t, q.get(), k.get(), v.get(), out.get(), lse.get(), c.B, c.H, c.Tq,
                                           c.Tk, c.D, scale_for(c.D), true, wsf.get(), nullptr),
                cudaSuccess);
      ASSERT_EQ(kernels::attention_backward(t, dout.get(), q.get(), k.get(), v.get(), out.get(), lse.get(),
                                            dq.get(), dk.get(), dv.get(), c.B, c.H, c.Tq, c.Tk, c.D,
                                            scale_for(c.D), true, wsb.get(), nullptr),
                cudaSuccess);
      if (run == 0) {
        const CpuResult fwd = cpu_attention(c, in, false, nullptr);
        const std::vector<float> o = out.download();
        EXPECT_LE(rel_l2(o, fwd.out), public_tol) << c.name;
        EXPECT_LE(rel_l2(lse.download(), fwd.lse), kF32Tol) << c.name;
        // Backward from the device's own out and lse, as training runs it.
        const CpuResult ref = cpu_attention(c, in, true, &o);
        EXPECT_LE(rel_l2(dq.download(), ref.dq), public_tol) << c.name;
        EXPECT_LE(rel_l2(dk.download(), ref.dk), public_tol) << c.name;
        EXPECT_LE(rel_l2(dv.download(), ref.dv), public_tol) << c.name;
      }
      const std::vector<float> lse_host = lse.download();
      const std::vector<uint8_t> now[5] = {
          out.raw(),
          std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(lse_host.data()),
                               reinterpret_cast<const uint8_t*>(lse_host.data() + nl)),
          dq.raw(), dk.raw(), dv.raw()};
      for (int i = 0; i < 5; ++i) {
        if (run == 0)
          first[i] = now[i];
        else
          EXPECT_EQ(first[i], now[i]) << c.name << " output " << i << " differs between two runs";
      }
    }
  }
}

TEST(KernelAttentionPublic, RejectsUnsupportedArguments) {
  DeviceBuffer<float> x(64), lse(8);
  void* p = x.get();
  for (int D : {0, 513})
    EXPECT_EQ(kernels::attention_forward(DType::F32, p, p, p, p, lse.get(), 1, 1, 1, 1, D, 1.f, false,
                                         nullptr, nullptr),
              cudaErrorInvalidValue)
        << "D " << D;
  EXPECT_EQ(kernels::attention_forward(DType::F16, p, p, p, p, lse.get(), 1, 1, 2, 2, 8, 1.f, false, nullptr,
                                       nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kernels::attention_forward(DType::F32, p, p, p, p, lse.get(), 1, 1, 2, 0, 8, 1.f, false, nullptr,
                                       nullptr),
            cudaErrorInvalidValue)
      << "no keys";
  EXPECT_EQ(kernels::attention_backward(DType::F32, p, p, p, p, p, lse.get(), p, p, p, 1, 1, 2, 2, 8, 1.f,
                                        false, nullptr, nullptr),
            cudaErrorInvalidValue)
      << "backward without its workspace";
  EXPECT_EQ(kernels::attention_forward(DType::F32, p, p, p, p, lse.get(), 0, 1, 2, 2, 8, 1.f, false, nullptr,
                                       nullptr),
            cudaSuccess)
      << "an empty batch is nothing to do";
}

// lse is optional in forward (inference): the output is the same bytes without it.
TEST(KernelAttentionPublic, ForwardWithoutLse) {
  const Case c{DType::BF16, 1, 2, 50, 77, 64, false, "bf16_d64_no_lse"};
  const Inputs in = make_inputs(c, 3);
  DevTensor q(c.t, in.q), k(c.t, in.k), v(c.t, in.v), out(c.t, in.q.size()), out2(c.t, in.q.size());
  DeviceBuffer<float> lse(size_t(c.B) * c.H * c.Tq);
  ASSERT_EQ(kernels::attention_forward(c.t, q.get(), k.get(), v.get(), out.get(), lse.get(), c.B, c.H, c.Tq,
                                       c.Tk, c.D, scale_for(c.D), false, nullptr, nullptr),
            cudaSuccess);
  ASSERT_EQ(kernels::attention_forward(c.t, q.get(), k.get(), v.get(), out2.get(), nullptr, c.B, c.H, c.Tq,
                                       c.Tk, c.D, scale_for(c.D), false, nullptr, nullptr),
            cudaSuccess);
  EXPECT_EQ(out.raw(), out2.raw());
}

}  // namespace
}  // namespace db
