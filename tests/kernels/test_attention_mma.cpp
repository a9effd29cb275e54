// The tensor-core attention path (kernels/attention_mma*.cu) against CpuOps' attention on the same
// bf16-rounded inputs, for SD's head dims 40, 64, 80, 160: self, cross (Tk = 77), causal (CLIP),
// tails (77, 100, 257 are not multiples of the 64-row tiles), B*H > 1, the 4-byte (unaligned) copy path,
// and bit-for-bit repeatability.
//
// Tolerances (relative L2 over the whole tensor; each run prints its measured errors):
//   out, dq, dk, dv: 1e-2 for bf16 I/O. The kernel rounds its output to bf16 (2^-9 relative per element,
//     about 2e-3 in L2 for uniform rounding error) and feeds P (forward, dV) and dS (dK, dQ) to the tensor
//     cores as bf16 (another 2^-9 per product term, averaging down over the key sum); the CPU reference
//     keeps everything f32. Measured 1.8-2.1e-3 forward, 2.2-2.5e-3 backward, so 1e-2 leaves 4x.
//   lse: |d| <= 1e-6 (1 + |lse|): fp32 all the way (exact bf16 products, f32 sums in another order than
//     the CPU GEMM); measured <= 1.6e-7.
// Bugs planted in the kernels and caught here: no cp.async wait in either loop, no leading or trailing
// barrier, causal mask dropped, scale ignored, lse off by 0.4 % or read in the wrong units.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "../emu/device_buffer.h"
#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/kernels/attention_paths.h"

namespace db {
namespace {

using test::DeviceBuffer;

uint16_t to_bf16(float x) {  // round to nearest even (inputs are finite)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = to_bf16(v[i]);
  return r;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = from_bf16(v[i]);
  return r;
}
// Uniform in [-a, a], already a bf16 value so the CPU reference sees exactly the kernel's inputs.
std::vector<float> random_bf16(size_t n, float a, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-a, a);
  std::vector<float> v(n);
  for (float& x : v) x = from_bf16(to_bf16(u(rng)));
  return v;
}
double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    e += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    r += double(ref[i]) * ref[i];
  }
  return std::sqrt(e / r);
}
double max_lse_err(const std::vector<float>& got, const std::vector<float>& ref) {
  double m = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    m = std::max(m, std::abs(double(got[i]) - ref[i]) / (1 + std::abs(ref[i])));
  return m;
}

struct Case {
  int B, H, Tq, Tk, D;
  bool causal;
  float scale = 0.f;  // 0: 1/sqrt(D)
  bool unaligned = false;
};

struct Inputs {
  Case c;
  float scale;
  std::vector<float> q, k, v, dout;  // bf16 values
  Tensor tq, tk, tv;
  AttentionParams p;
  explicit Inputs(const Case& cs) : c(cs) {
    scale = c.scale != 0.f ? c.scale : 1.f / std::sqrt(float(c.D));
    const int64_t HD = int64_t(c.H) * c.D;
    const uint32_t seed = uint32_t(c.D * 1000 + c.Tq * 7 + c.Tk);
    q = random_bf16(size_t(c.B) * c.Tq * HD, 2.f, seed);
    k = random_bf16(size_t(c.B) * c.Tk * HD, 2.f, seed + 1);
    v = random_bf16(size_t(c.B) * c.Tk * HD, 1.f, seed + 2);
    dout = random_bf16(size_t(c.B) * c.Tq * HD, 1.f, seed + 3);
    tq = Tensor::from_vector(q, {c.B, c.Tq, HD});
    tk = Tensor::from_vector(k, {c.B, c.Tk, HD});
    tv = Tensor::from_vector(v, {c.B, c.Tk, HD});
    p.heads = c.H;
    p.scale = scale;
    p.causal = c.causal;
  }
};

// A bf16 device copy of v, shifted by 2 elements (4 bytes: the kernels' 4-byte copy path) when unaligned.
struct Dev {
  DeviceBuffer<uint16_t> buf;
  int off;
  Dev(const std::vector<float>& v, bool unaligned) : buf(v.size() + 8), off(unaligned ? 2 : 0) {
    std::vector<uint16_t> h(buf.size(), 0);
    const std::vector<uint16_t> b = to_bf16(v);
    std::copy(b.begin(), b.end(), h.begin() + off);
    buf.upload(h);
  }
  void* ptr() const { return buf.get() + off; }
  std::vector<float> get(size_t n) const {
    const std::vector<uint16_t> h = buf.download();
    return from_bf16(std::vector<uint16_t>(h.begin() + off, h.begin() + off + ptrdiff_t(n)));
  }
};

struct FwdResult {
  std::vector<float> out, lse;
};

FwdResult run_forward(const Inputs& in) {
  const Case& c = in.c;
  const size_t nq = in.q.size();
  Dev q(in.q, c.unaligned), k(in.k, c.unaligned), v(in.v, c.unaligned),
      out(std::vector<float>(nq, 0.f), c.unaligned);
  DeviceBuffer<float> lse(size_t(c.B) * c.H * c.Tq);
  EXPECT_TRUE(kernels::attention_mma_supported(DType::BF16, c.D, false));
  EXPECT_EQ(kernels::attention_mma_forward(DType::BF16, q.ptr(), k.ptr(), v.ptr(), out.ptr(), lse.get(), c.B,
                                           c.H, c.Tq, c.Tk, c.D, in.scale, c.causal, nullptr, nullptr),
            cudaSuccess);
  return {out.get(nq), lse.download()};
}

void check_forward(const Case& c) {
  const Inputs in(c);
  CpuOps cpu;
  Tensor out = Tensor::zeros(in.tq.shape()), lse = Tensor::zeros({c.B, c.H, c.Tq});
  cpu.attention_forward(in.tq, in.tk, in.tv, out, in.p, &lse);
  const FwdResult got = run_forward(in);
  const std::vector<float> ref_out(out.f32(), out.f32() + out.numel()),
      ref_lse(lse.f32(), lse.f32() + lse.numel());
  const double e_out = rel_l2(got.out, ref_out), e_lse = max_lse_err(got.lse, ref_lse);
  std::printf("  [attention_mma fwd d%d Tq %d Tk %d%s] out rel L2 %.2e, lse %.2e\n", c.D, c.Tq, c.Tk,
              c.causal ? " causal" : "", e_out, e_lse);
  EXPECT_LT(e_out, 1e-2);
  EXPECT_LT(e_lse, 1e-6);
}

struct BwdResult {
  std::vector<float> dq, dk, dv;
};

// The CPU forward's out (rounded to bf16, as a bf16 forward would have stored it) and lse feed both sides.
BwdResult run_backward(const Inputs& in, const std::vector<float>& out_bf16,
                       const std::vector<float>& lse_ref) {
  const Case& c = in.c;
  const size_t nq = in.q.size(), nk = in.k.size();
  const bool u = c.unaligned;
  Dev q(in.q, u), k(in.k, u), v(in.v, u), dout(in.dout, u), out(out_bf16, u);
  Dev dq(std::vector<float>(nq, 0.f), u), dk(std::vector<float>(nk, 0.f), u),
      dv(std::vector<float>(nk, 0.f), u);
  DeviceBuffer<float> lse(lse_ref);
  DeviceBuffer<uint8_t> ws(kernels::attention_mma_backward_workspace(c.B, c.H, c.Tq, c.Tk, c.D));
  EXPECT_TRUE(kernels::attention_mma_supported(DType::BF16, c.D, true));
  EXPECT_EQ(kernels::attention_mma_backward(DType::BF16, dout.ptr(), q.ptr(), k.ptr(), v.ptr(), out.ptr(),
                                            lse.get(), dq.ptr(), dk.ptr(), dv.ptr(), c.B, c.H, c.Tq, c.Tk,
                                            c.D, in.scale, c.causal, ws.get(), nullptr),
            cudaSuccess);
  return {dq.get(nq), dk.get(nk), dv.get(nk)};
}

void check_backward(const Case& c) {
  const Inputs in(c);
  CpuOps cpu;
  Tensor out = Tensor::zeros(in.tq.shape()), lse = Tensor::zeros({c.B, c.H, c.Tq});
  cpu.attention_forward(in.tq, in.tk, in.tv, out, in.p, &lse);
  const std::vector<float> out_bf16 =
      from_bf16(to_bf16(std::vector<float>(out.f32(), out.f32() + out.numel())));
  const std::vector<float> lse_ref(lse.f32(), lse.f32() + lse.numel());
  Tensor dq = Tensor::zeros(in.tq.shape()), dk = Tensor::zeros(in.tk.shape()),
         dv = Tensor::zeros(in.tk.shape());
  cpu.attention_backward(Tensor::from_vector(in.dout, in.tq.shape()), in.tq, in.tk, in.tv,
                         Tensor::from_vector(out_bf16, in.tq.shape()), lse, in.p, dq, dk, dv);
  const BwdResult got = run_backward(in, out_bf16, lse_ref);
  auto vec = [](const Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); };
  const double e_dq = rel_l2(got.dq, vec(dq)), e_dk = rel_l2(got.dk, vec(dk)), e_dv = rel_l2(got.dv, vec(dv));
  std::printf("  [attention_mma bwd d%d Tq %d Tk %d%s] rel L2 dq %.2e dk %.2e dv %.2e\n", c.D, c.Tq, c.Tk,
              c.causal ? " causal" : "", e_dq, e_dk, e_dv);
  EXPECT_LT(e_dq, 1e-2);
  EXPECT_LT(e_dk, 1e-2);
  EXPECT_LT(e_dv, 1e-2);
}

// ---- forward ----
TEST(KernelAttentionMmaFwd, D40SelfTails100TwoHeads) {
  check_forward({1, 2, 100, 100, 40, false});
}
TEST(KernelAttentionMmaFwd, D40CrossTk77Tq257) {
  check_forward({1, 1, 257, 77, 40, false});
}
TEST(KernelAttentionMmaFwd, D64CausalClip77TwoBatches) {
  check_forward({2, 1, 77, 77, 64, true});
}
TEST(KernelAttentionMmaFwd, D64CausalTqNeTk) {
  check_forward({1, 1, 100, 77, 64, true});
}
TEST(KernelAttentionMmaFwd, D80CrossTk77Unaligned) {
  check_forward({1, 2, 100, 77, 80, false, 0.f, true});
}
TEST(KernelAttentionMmaFwd, D80SelfScale) {
  check_forward({1, 1, 200, 200, 80, false, 0.3f});
}
TEST(KernelAttentionMmaFwd, D160SelfTail257) {
  check_forward({1, 1, 257, 257, 160, false});
}
TEST(KernelAttentionMmaFwd, D160CrossCausal) {
  check_forward({1, 1, 77, 100, 160, true});
}

TEST(KernelAttentionMmaFwd, D64Deterministic) {
  const Inputs in({1, 2, 100, 77, 64, false});
  const FwdResult a = run_forward(in), b = run_forward(in);
  EXPECT_EQ(0, std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)));
}

// ---- backward ----
TEST(KernelAttentionMmaBwd, D40SelfTails100TwoHeads) {
  check_backward({1, 2, 100, 100, 40, false});
}
TEST(KernelAttentionMmaBwd, D40CrossTk77Tq257) {
  check_backward({1, 1, 257, 77, 40, false});
}
TEST(KernelAttentionMmaBwd, D64CausalClip77TwoBatches) {
  check_backward({2, 1, 77, 77, 64, true});
}
// Key block 1 (keys 64..99) sees no query under the mask: its dK/dV block has no query tile and writes 0.
TEST(KernelAttentionMmaBwd, D64CausalTkBeyondTq) {
  check_backward({1, 1, 20, 100, 64, true});
}
TEST(KernelAttentionMmaBwd, D80CrossTk77Unaligned) {
  check_backward({1, 2, 100, 77, 80, false, 0.f, true});
}
TEST(KernelAttentionMmaBwd, D80SelfScale) {
  check_backward({1, 1, 64, 64, 80, false, 0.3f});
}
TEST(KernelAttentionMmaBwd, D160SelfTail100) {
  check_backward({1, 1, 100, 100, 160, false});
}
TEST(KernelAttentionMmaBwd, D160CrossCausal) {
  check_backward({1, 1, 77, 100, 160, true});
}

TEST(KernelAttentionMmaBwd, D64Deterministic) {
  const Inputs in({1, 2, 100, 77, 64, true});
  const std::vector<float> out = random_bf16(in.q.size(), 1.f, 5), lse(size_t(2) * 100, 3.f);
  const BwdResult a = run_backward(in, out, lse), b = run_backward(in, out, lse);
  for (auto [x, y] : {std::pair{&a.dq, &b.dq}, {&a.dk, &b.dk}, {&a.dv, &b.dv}})
    EXPECT_EQ(0, std::memcmp(x->data(), y->data(), x->size() * sizeof(float)));
}

}  // namespace
}  // namespace db
