// kernels/elementwise.cu against CpuOps (the fp32 reference) under the emulator.
// Tolerances:
//   - F32, same formula as CpuOps (activations, GEGLU, add, scale): per element 1e-6 |ref| + 4e-6. The
//     emulator runs the same libm calls (bit-exact in practice: measured 0); on a GPU expf/erff are within
//     2 ulp and nvcc may contract a*b+c into one FMA, a few ulp of the result. The absolute term covers
//     cancellation near zero outputs: 1 + erf(x/sqrt2) for x << 0 carries erff's 2 ulp of 1 (2.4e-7),
//     times 0.5|x| |hidden| |dy| (<= 0.5 * 4 * 4 * 3 in the GEGLU test): <= 3e-6.
//   - BF16: CpuOps on the bf16-rounded inputs, its f32 output rounded to bf16. The f32 values agree to a
//     few ulp, so a rounding can flip at most one bf16 ulp: per element 2^-7 |ref| + 4e-6 (the f32
//     cancellation term above, for outputs near zero), and the
//     relative L2 error must stay under 1e-2.
//   - fill, cast, broadcast add, bias add: bit-exact (one rounding of the same f32 value).
//   - Column sums (bias gradients, add_broadcast backward): bit-exact against a host replay of the
//     kernel's fixed summation order (the determinism contract), and within 2e-6 sum|a| of CpuOps' f64
//     sums (f32 accumulation of <= 600 rows: error <= ~ (rows/8 + 8 + chunks) eps sum|a|).
#include <gtest/gtest.h>

#include <cstdlib>
#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/kernels/elementwise.h"
#include "elementwise_test_util.h"

namespace db {
namespace {

using kernels::Act;
using test::DeviceArray;

constexpr double kF32Rel = 1e-6, kF32Abs = 4e-6;
constexpr double kBf16Rel = 1.0 / 128, kBf16Abs = 4e-6, kBf16L2 = 1e-2;

Tensor host(const std::vector<float>& v) {
  return Tensor::from_vector(v, {int64_t(v.size())});
}
std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

// Compares a kernel's output in dtype t with the f32 reference computed on t-rounded inputs.
void expect_matches(DType t, const std::vector<float>& got, const std::vector<float>& ref_f32,
                    const std::string& what) {
  if (t == DType::F32) return test::expect_close(got, ref_f32, kF32Rel, kF32Abs, what);
  const std::vector<float> ref = test::rounded(ref_f32, t);
  test::expect_close(got, ref, kBf16Rel, kBf16Abs, what);
  EXPECT_LE(test::rel_l2(got, ref), kBf16L2) << what;
}

std::string label(const char* op, DType t, size_t offset) {
  return std::string(op) + " " + dtype_name(t) + " offset " + std::to_string(offset);
}

TEST(KernelElementwise, FillEveryDtypeLeavesNeighboursAlone) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::F64})
    for (size_t offset : {0, 1})
      for (int64_t n : {1, 7, 1029}) {
        // n elements from `offset` (0: 16-byte aligned, the packed path) in a buffer of n + 2.
        std::vector<float> init(size_t(n) + 2, -7.f);
        DeviceArray buf(t, init);
        void* start = static_cast<char*>(buf.get()) + offset * dtype_size(t);
        ASSERT_EQ(kernels::fill(t, start, n, 0.1f, nullptr), cudaSuccess);
        std::vector<float> want(init);
        const float v = test::rounded({0.1f}, t)[0];
        for (int64_t i = 0; i < n; ++i) want[offset + size_t(i)] = v;
        test::expect_bits_equal(buf.download(), want, label("fill", t, offset) + " n " + std::to_string(n));
      }
}

TEST(KernelElementwise, CastBetweenFloatDtypesRoundsToNearestEven) {
  // Values with bits below bf16/f16 precision, ties included, and f16 overflow / subnormals.
  std::vector<float> v = test::random_floats(1027, 11, -70000.f, 70000.f);
  const std::vector<float> small = test::random_floats(64, 12, -1e-5f, 1e-5f);
  std::copy(small.begin(), small.end(), v.begin());
  v[100] = 1.f + 1.f / 256;  // a bf16 tie: rounds to even (1.0)
  v[101] = 1.f + 3.f / 256;  // the other tie: rounds up
  for (DType from : {DType::F32, DType::BF16, DType::F16})
    for (DType to : {DType::F32, DType::BF16, DType::F16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> src = test::rounded(v, from);
        DeviceArray a(from, src, offset), b(to, v.size(), offset);
        ASSERT_EQ(kernels::cast(from, a.get(), to, b.get(), int64_t(v.size()), nullptr), cudaSuccess);
        EXPECT_EQ(b.bytes(), test::encode(src, to))
            << dtype_name(from) << " -> " << dtype_name(to) << " offset " << offset;
      }
}

TEST(KernelElementwise, ActivationForwardMatchesCpu) {
  CpuOps cpu;
  const std::vector<float> x = test::random_floats(1029, 21, -6.f, 6.f);
  for (Act act : {Act::None, Act::SiLU, Act::GELU, Act::QuickGELU})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> xr = test::rounded(x, t);
        Tensor y = Tensor::empty({int64_t(x.size())});
        cpu.activation_forward(host(xr), y, Activation(act));
        DeviceArray dx(t, xr, offset), dy(t, x.size(), offset);
        ASSERT_EQ(kernels::activation_forward(t, dx.get(), dy.get(), int64_t(x.size()), act, nullptr),
                  cudaSuccess);
        const std::string what = label("activation", t, offset) + " act " + std::to_string(int(act));
        expect_matches(t, dy.download(), values(y), what);
        // In place (y aliases x).
        ASSERT_EQ(kernels::activation_forward(t, dx.get(), dx.get(), int64_t(x.size()), act, nullptr),
                  cudaSuccess);
        expect_matches(t, dx.download(), values(y), what + " in place");
      }
}

TEST(KernelElementwise, ActivationBackwardMatchesCpu) {
  CpuOps cpu;
  const std::vector<float> x = test::random_floats(1029, 31, -6.f, 6.f), g = test::random_floats(1029, 32);
  for (Act act : {Act::None, Act::SiLU, Act::GELU, Act::QuickGELU})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> xr = test::rounded(x, t), gr = test::rounded(g, t);
        Tensor dx = Tensor::empty({int64_t(x.size())});
        cpu.activation_backward(host(xr), host(gr), dx, Activation(act));
        DeviceArray dX(t, xr, offset), dG(t, gr, offset), dOut(t, x.size(), offset);
        ASSERT_EQ(
            kernels::activation_backward(t, dX.get(), dG.get(), dOut.get(), int64_t(x.size()), act, nullptr),
            cudaSuccess);
        const std::string what = label("activation_backward", t, offset) + " act " + std::to_string(int(act));
        expect_matches(t, dOut.download(), values(dx), what);
        // dx aliases dy.
        ASSERT_EQ(
            kernels::activation_backward(t, dX.get(), dG.get(), dG.get(), int64_t(x.size()), act, nullptr),
            cudaSuccess);
        expect_matches(t, dG.download(), values(dx), what + " in place");
      }
}

TEST(KernelElementwise, GegluForwardBackwardMatchCpu) {
  CpuOps cpu;
  struct Shape2 {
    int64_t M, N;
  };
  // SD 1.x's GEGLU halves are 1280 wide at the first level; 37 takes the scalar path.
  for (Shape2 s : {Shape2{3, 1280}, Shape2{5, 37}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const size_t nx = size_t(s.M * 2 * s.N), ny = size_t(s.M * s.N);
        const std::vector<float> x = test::rounded(test::random_floats(nx, 41, -4.f, 4.f), t);
        const std::vector<float> g = test::rounded(test::random_floats(ny, 42), t);
        Tensor y = Tensor::empty({s.M, s.N}), dx = Tensor::empty({s.M, 2 * s.N});
        const Tensor hx = Tensor::from_vector(x, {s.M, 2 * s.N}), hg = Tensor::from_vector(g, {s.M, s.N});
        cpu.geglu_forward(hx, y);
        cpu.geglu_backward(hx, hg, dx);
        DeviceArray dX(t, x, offset), dY(t, ny, offset), dG(t, g, offset), dDX(t, nx, offset);
        ASSERT_EQ(kernels::geglu_forward(t, dX.get(), dY.get(), s.M, s.N, nullptr), cudaSuccess);
        ASSERT_EQ(kernels::geglu_backward(t, dX.get(), dG.get(), dDX.get(), s.M, s.N, nullptr), cudaSuccess);
        const std::string what = label("geglu", t, offset) + " N " + std::to_string(s.N);
        expect_matches(t, dY.download(), values(y), what);
        expect_matches(t, dDX.download(), values(dx), what + " backward");
      }
}

TEST(KernelElementwise, AddEveryDtypeMixMatchesCpu) {
  CpuOps cpu;
  const size_t n = 1029;
  const std::vector<float> a = test::random_floats(n, 51), b = test::random_floats(n, 52);
  for (DType ta : {DType::F32, DType::BF16})
    for (DType tb : {DType::F32, DType::BF16})
      for (DType ty : {DType::F32, DType::BF16})
        for (size_t offset : {0, 1}) {
          const std::vector<float> ar = test::rounded(a, ta), br = test::rounded(b, tb);
          Tensor y = Tensor::empty({int64_t(n)});
          cpu.add_forward(host(ar), host(br), y, 0.7f, -1.3f);
          DeviceArray dA(ta, ar, offset), dB(tb, br, offset), dY(ty, n, offset);
          ASSERT_EQ(kernels::add(ta, dA.get(), tb, dB.get(), ty, dY.get(), int64_t(n), 0.7f, -1.3f, nullptr),
                    cudaSuccess);
          const std::string what = std::string("add ") + dtype_name(ta) + " + " + dtype_name(tb) + " -> " +
                                   dtype_name(ty) + " offset " + std::to_string(offset);
          expect_matches(ty, dY.download(), values(y), what);
          if (ty == ta) {  // y aliases a
            ASSERT_EQ(
                kernels::add(ta, dA.get(), tb, dB.get(), ty, dA.get(), int64_t(n), 0.7f, -1.3f, nullptr),
                cudaSuccess);
            expect_matches(ty, dA.download(), values(y), what + " in place");
          }
        }
}

TEST(KernelElementwise, ScaleMatchesCpu) {
  CpuOps cpu;
  const std::vector<float> x = test::random_floats(1029, 61);
  for (DType t : {DType::F32, DType::BF16})
    for (size_t offset : {0, 1}) {
      const std::vector<float> xr = test::rounded(x, t);
      Tensor y = Tensor::empty({int64_t(x.size())});
      cpu.scale_forward(host(xr), y, -0.37f);
      DeviceArray dX(t, xr, offset);
      ASSERT_EQ(kernels::scale(t, dX.get(), dX.get(), int64_t(x.size()), -0.37f, nullptr), cudaSuccess);
      expect_matches(t, dX.download(), values(y), label("scale in place", t, offset));
    }
}

TEST(KernelElementwise, BroadcastAddAndBiasAddMatchCpuBitExact) {
  CpuOps cpu;
  struct Case {
    int B;
    int64_t N;
    int C;
  };
  for (Case c : {Case{2, 5, 320}, Case{3, 4, 37}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const size_t nx = size_t(c.B * c.N * c.C);
        const std::vector<float> x = test::rounded(test::random_floats(nx, 71), t);
        const std::vector<float> v = test::rounded(test::random_floats(size_t(c.B * c.C), 72), t);
        Tensor hx = Tensor::from_vector(x, {c.B, c.N, c.C});
        cpu.add_broadcast_forward(hx, Tensor::from_vector(v, {c.B, c.C}));
        DeviceArray dX(t, x, offset), dV(t, v, offset);
        ASSERT_EQ(kernels::add_broadcast_forward(t, dX.get(), dV.get(), c.B, c.N, c.C, nullptr), cudaSuccess);
        const std::string what = label("add_broadcast", t, offset) + " C " + std::to_string(c.C);
        test::expect_bits_equal(dX.download(), test::rounded(values(hx), t), what);
        // bias_add is the B = 1 case over all rows: y [B N, C] += b [C].
        Tensor hy = Tensor::from_vector(x, {1, c.B * c.N, c.C});
        const std::vector<float> bias(v.begin(), v.begin() + c.C);
        cpu.add_broadcast_forward(hy, Tensor::from_vector(bias, {1, c.C}));
        DeviceArray dY(t, x, offset), dB(t, bias, offset);
        ASSERT_EQ(kernels::bias_add(t, dY.get(), dB.get(), c.B * c.N, c.C, nullptr), cudaSuccess);
        test::expect_bits_equal(dY.download(), test::rounded(values(hy), t), what + " bias_add");
      }
}

// The kernels' summation order for column n of a [M, N]: per 256-row chunk, 8 lanes sum rows y, y + 8, ...
// in order, the lanes are added 0..7, then the chunks in order.
float ordered_column_sum(const std::vector<float>& a, int64_t M, int64_t N, int64_t n) {
  float total = 0.f;
  for (int64_t r0 = 0; r0 < M; r0 += 256) {
    float lanes[8];
    for (int y = 0; y < 8; ++y) {
      lanes[y] = 0.f;
      for (int64_t r = r0 + y; r < std::min<int64_t>(M, r0 + 256); r += 8) lanes[y] += a[size_t(r * N + n)];
    }
    float chunk = lanes[0];
    for (int y = 1; y < 8; ++y) chunk += lanes[y];
    total += chunk;
  }
  return total;
}

double abs_column_sum(const std::vector<float>& a, int64_t M, int64_t N, int64_t n) {
  double s = 0;
  for (int64_t r = 0; r < M; ++r) s += std::fabs(a[size_t(r * N + n)]);
  return s;
}

TEST(KernelElementwise, ColumnSumAddIsOrderedAndMatchesCpu) {
  struct Case {
    int64_t M, N;
  };
  // 600 rows: three chunks, the last partial; N = 320 (SD's first level), 37 odd.
  for (Case c : {Case{600, 320}, Case{19, 37}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> a = test::rounded(test::random_floats(size_t(c.M * c.N), 81), t);
        const std::vector<float> out0 = test::random_floats(size_t(c.N), 82);
        std::vector<float> cpu_out(out0);
        cpu_column_sum_add(a.data(), c.M, c.N, c.N, cpu_out.data());
        DeviceArray dA(t, a, offset), dOut(DType::F32, out0, offset);
        test::DeviceBuffer<uint8_t> ws(kernels::column_sum_workspace(c.M, c.N));
        ASSERT_EQ(kernels::column_sum_add(t, dA.get(), c.M, c.N, dOut.as<float>(), ws.get(), nullptr),
                  cudaSuccess);
        const std::vector<float> got = dOut.download();
        std::vector<float> ordered(out0);
        for (int64_t n = 0; n < c.N; ++n) ordered[size_t(n)] += ordered_column_sum(a, c.M, c.N, n);
        const std::string what = label("column_sum_add", t, offset) + " N " + std::to_string(c.N);
        test::expect_bits_equal(got, ordered, what + " (kernel order)");
        for (int64_t n = 0; n < c.N; ++n)
          EXPECT_NEAR(got[size_t(n)], cpu_out[size_t(n)], 2e-6 * (abs_column_sum(a, c.M, c.N, n) + 1))
              << what;
      }
}

TEST(KernelElementwise, AddBroadcastBackwardIsOrderedAndMatchesCpu) {
  CpuOps cpu;
  struct Case {
    int B;
    int64_t N;
    int C;
  };
  for (Case c : {Case{2, 300, 320}, Case{2, 9, 37}})
    for (DType t : {DType::F32, DType::BF16})
      for (size_t offset : {0, 1}) {
        const std::vector<float> dy = test::rounded(test::random_floats(size_t(c.B * c.N * c.C), 91), t);
        Tensor dv = Tensor::empty({c.B, c.C});
        cpu.add_broadcast_backward(Tensor::from_vector(dy, {c.B, c.N, c.C}), dv);
        std::vector<float> ordered(size_t(c.B * c.C));
        for (int b = 0; b < c.B; ++b) {
          const std::vector<float> slab(dy.begin() + b * c.N * c.C, dy.begin() + (b + 1) * c.N * c.C);
          for (int n = 0; n < c.C; ++n) ordered[size_t(b * c.C + n)] = ordered_column_sum(slab, c.N, c.C, n);
        }
        DeviceArray dDY(t, dy, offset), dDV(t, std::vector<float>(size_t(c.B * c.C), 5.f), offset);
        test::DeviceBuffer<uint8_t> ws(kernels::add_broadcast_backward_workspace(c.B, c.N, c.C));
        ASSERT_EQ(kernels::add_broadcast_backward(t, dDY.get(), dDV.get(), c.B, c.N, c.C, ws.get(), nullptr),
                  cudaSuccess);
        const std::string what = label("add_broadcast_backward", t, offset) + " C " + std::to_string(c.C);
        const std::vector<float> got = dDV.download();
        test::expect_bits_equal(got, test::rounded(ordered, t), what + " (kernel order)");
        if (t != DType::F32) continue;
        for (int b = 0; b < c.B; ++b) {
          const std::vector<float> slab(dy.begin() + b * c.N * c.C, dy.begin() + (b + 1) * c.N * c.C);
          for (int n = 0; n < c.C; ++n)
            EXPECT_NEAR(got[size_t(b * c.C + n)], dv.f32()[b * c.C + n],
                        2e-6 * (abs_column_sum(slab, c.N, c.C, n) + 1))
                << what;
        }
      }
}

// More packs than the grid's 4096 x 256 threads: each thread takes a second turn of the grid-stride
// loop (the large-tensor path), and the scalar tail still lands.
TEST(KernelElementwise, GridStrideLoopCoversLargeTensors) {
  const int64_t n = (int64_t(4096) * 256 + 1000) * 4 + 3;
  std::vector<float> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) x[size_t(i)] = float(i % 1000) - 500.f;
  DeviceArray dX(DType::F32, x);
  ASSERT_EQ(kernels::scale(DType::F32, dX.get(), dX.get(), n, 0.5f, nullptr), cudaSuccess);
  const std::vector<float> got = dX.download();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[size_t(i)], 0.5f * x[size_t(i)]) << "element " << i;
}

TEST(KernelElementwise, RejectsUnsupportedArguments) {
  DeviceArray x(DType::F32, 8);
  EXPECT_EQ(kernels::fill(DType::I32, x.get(), 8, 0.f, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(kernels::scale(DType::F16, x.get(), x.get(), 8, 2.f, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(kernels::cast(DType::F32, x.get(), DType::I64, x.get(), 8, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(kernels::column_sum_add(DType::F32, x.get(), 2, 4, x.as<float>(), nullptr, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(kernels::fill(DType::F32, x.get(), 0, 0.f, nullptr), cudaSuccess);  // nothing to do
}

}  // namespace
}  // namespace db
