// Ops.*: the CPU backend against naive loops written straight from the definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

using namespace db;

namespace {

Tensor randn(const Shape& s, uint32_t seed, float scale = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = d(rng);
  return t;
}

// max |a - b| / max(1, max |b|)
double max_err(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.numel(), b.numel());
  double e = 0, m = 1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    e = std::max(e, double(std::abs(a.f32()[i] - b.f32()[i])));
    m = std::max(m, double(std::abs(b.f32()[i])));
  }
  return e / m;
}

double gelu(double x) {
  return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
}

}  // namespace

TEST(Ops, LinearMatchesNaive) {
  CpuOps ops;
  const int M = 7, K = 13, N = 5;
  Tensor x = randn({M, K}, 1), w = randn({N, K}, 2), b = randn({N}, 3), y = Tensor::empty({M, N});
  ops.linear_forward(x, w, b, y);
  Tensor ref = Tensor::empty({M, N});
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double s = b.f32()[n];
      for (int k = 0; k < K; ++k) s += double(x.f32()[m * K + k]) * w.f32()[n * K + k];
      ref.f32()[m * N + n] = float(s);
    }
  EXPECT_LT(max_err(y, ref), 1e-5);
  ops.linear_forward(x, w, Tensor(), y);  // no bias
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) ref.f32()[m * N + n] -= b.f32()[n];
  EXPECT_LT(max_err(y, ref), 1e-5);
}

// Naive 7-loop convolution (b, oh, ow, o, kh, kw, i) with explicit per-side padding.
static Tensor naive_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dGeometry& g) {
  const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), I = x.dim(3), O = w.dim(0), KH = w.dim(1),
                KW = w.dim(2);
  const int64_t Ho = g.out_h(int(H), int(KH)), Wo = g.out_w(int(W), int(KW));
  Tensor y = Tensor::empty({B, Ho, Wo, O});
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t o = 0; o < O; ++o) {
          double s = b.defined() ? b.f32()[o] : 0.0;
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw)
              for (int64_t i = 0; i < I; ++i) {
                const int64_t ih = oh * g.stride - g.pad_top + kh, iw = ow * g.stride - g.pad_left + kw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                s += double(x.f32()[((bi * H + ih) * W + iw) * I + i]) *
                     w.f32()[((o * KH + kh) * KW + kw) * I + i];
              }
          y.f32()[((bi * Ho + oh) * Wo + ow) * O + o] = float(s);
        }
  return y;
}

TEST(Ops, Conv2dMatchesNaive) {
  CpuOps ops;
  struct Case {
    int k;
    Conv2dGeometry g;
    bool bias;
  };
  const Case cases[] = {
      {3, Conv2dGeometry::same(1), true},     // resnet conv
      {1, Conv2dGeometry::same(0), true},     // 1x1 (plain GEMM path)
      {1, Conv2dGeometry::same(0), false},    // 1x1 without bias
      {3, Conv2dGeometry::same(1, 2), true},  // UNet Downsample2D (padding 1, stride 2)
      {3, {2, 0, 1, 0, 1}, true},             // VAE Downsample2D: F.pad (0, 1, 0, 1) then padding 0
  };
  for (const Case& c : cases) {
    for (int H : {6, 7}) {
      Tensor x = randn({2, H, H + 1, 5}, 10 + H), w = randn({6, c.k, c.k, 5}, 11), b = randn({6}, 12);
      if (!c.bias) b = Tensor();
      Tensor ref = naive_conv(x, w, b, c.g);
      Tensor y = Tensor::empty(ref.shape());
      ops.conv2d_forward(x, w, b, y, c.g);
      EXPECT_LT(max_err(y, ref), 1e-5) << "k " << c.k << " stride " << c.g.stride << " H " << H;
    }
  }
}

TEST(Ops, GroupNormMatchesNaive) {
  CpuOps ops;
  const int B = 2, H = 3, W = 4, C = 12, G = 4;
  Tensor x = randn({B, H, W, C}, 4, 3.f), gamma = randn({C}, 5), beta = randn({C}, 6);
  for (Activation act : {Activation::None, Activation::SiLU}) {
    Tensor y = Tensor::empty(x.shape()), mean = Tensor::empty({B, G}), rstd = Tensor::empty({B, G});
    ops.group_norm_forward(x, gamma, beta, y, G, 1e-6f, act, &mean, &rstd);
    Tensor ref = Tensor::empty(x.shape());
    const int cg = C / G;
    for (int b = 0; b < B; ++b)
      for (int g = 0; g < G; ++g) {
        double s = 0, s2 = 0;
        const int n = H * W * cg;
        for (int p = 0; p < H * W; ++p)
          for (int c = g * cg; c < (g + 1) * cg; ++c) s += x.f32()[(b * H * W + p) * C + c];
        const double mu = s / n;
        for (int p = 0; p < H * W; ++p)
          for (int c = g * cg; c < (g + 1) * cg; ++c)
            s2 += std::pow(x.f32()[(b * H * W + p) * C + c] - mu, 2);
        const double r = 1 / std::sqrt(s2 / n + 1e-6);
        EXPECT_NEAR(mean.f32()[b * G + g], mu, 1e-5);
        EXPECT_NEAR(rstd.f32()[b * G + g], r, 1e-5 * r);
        for (int p = 0; p < H * W; ++p)
          for (int c = g * cg; c < (g + 1) * cg; ++c) {
            const int i = (b * H * W + p) * C + c;
            double v = (x.f32()[i] - mu) * r * gamma.f32()[c] + beta.f32()[c];
            if (act == Activation::SiLU) v = v / (1 + std::exp(-v));
            ref.f32()[i] = float(v);
          }
      }
    EXPECT_LT(max_err(y, ref), 1e-5);
  }
}

TEST(Ops, LayerNormMatchesNaive) {
  CpuOps ops;
  const int M = 5, C = 33;
  Tensor x = randn({M, C}, 7, 2.f), gamma = randn({C}, 8), beta = randn({C}, 9), y = Tensor::empty({M, C});
  ops.layer_norm_forward(x, gamma, beta, y, 1e-5f, nullptr, nullptr);
  Tensor ref = Tensor::empty({M, C});
  for (int m = 0; m < M; ++m) {
    double s = 0, s2 = 0;
    for (int c = 0; c < C; ++c) s += x.f32()[m * C + c];
    const double mu = s / C;
    for (int c = 0; c < C; ++c) s2 += std::pow(x.f32()[m * C + c] - mu, 2);
    for (int c = 0; c < C; ++c)
      ref.f32()[m * C + c] =
          float((x.f32()[m * C + c] - mu) / std::sqrt(s2 / C + 1e-5) * gamma.f32()[c] + beta.f32()[c]);
  }
  EXPECT_LT(max_err(y, ref), 1e-5);
}

TEST(Ops, AttentionMatchesNaiveSoftmax) {
  CpuOps ops;
  struct Case {
    int B, Tq, Tk, H, D;
    bool causal;
  };
  // self (head dims 40 and 64 as in SD), cross (Tk != Tq), causal self (CLIP)
  for (const Case& c :
       {Case{2, 9, 9, 2, 40, false}, Case{1, 6, 11, 3, 64, false}, Case{2, 7, 7, 4, 8, true}}) {
    const int HD = c.H * c.D;
    Tensor q = randn({c.B, c.Tq, HD}, 20, 2.f), k = randn({c.B, c.Tk, HD}, 21, 2.f),
           v = randn({c.B, c.Tk, HD}, 22);
    Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({c.B, c.H, c.Tq});
    ops.attention_forward(q, k, v, out, {c.H, 0.f, c.causal, false}, &lse);
    Tensor ref = Tensor::empty(q.shape());
    const double scale = 1 / std::sqrt(double(c.D));
    for (int b = 0; b < c.B; ++b)
      for (int h = 0; h < c.H; ++h)
        for (int i = 0; i < c.Tq; ++i) {
          std::vector<double> s(c.Tk, -INFINITY);
          double mx = -INFINITY, sum = 0;
          for (int j = 0; j < c.Tk; ++j) {
            if (c.causal && j > i) continue;
            double d = 0;
            for (int e = 0; e < c.D; ++e)
              d += double(q.f32()[(b * c.Tq + i) * HD + h * c.D + e]) *
                   k.f32()[(b * c.Tk + j) * HD + h * c.D + e];
            s[j] = d * scale;
            mx = std::max(mx, s[j]);
          }
          for (int j = 0; j < c.Tk; ++j) sum += std::exp(s[j] - mx);
          EXPECT_NEAR(lse.f32()[(b * c.H + h) * c.Tq + i], mx + std::log(sum), 1e-4);
          for (int e = 0; e < c.D; ++e) {
            double o = 0;
            for (int j = 0; j < c.Tk; ++j)
              o += std::exp(s[j] - mx) / sum * v.f32()[(b * c.Tk + j) * HD + h * c.D + e];
            ref.f32()[(b * c.Tq + i) * HD + h * c.D + e] = float(o);
          }
        }
    EXPECT_LT(max_err(out, ref), 1e-5) << "Tq " << c.Tq << " Tk " << c.Tk << " causal " << c.causal;
  }
}

TEST(Ops, ActivationsMatchFormulas) {
  CpuOps ops;
  Tensor x = randn({1000}, 30, 3.f), y = Tensor::empty({1000});
  ops.activation_forward(x, y, Activation::SiLU);
  for (int i = 0; i < 1000; ++i) {
    const double v = x.f32()[i];
    ASSERT_NEAR(y.f32()[i], v / (1 + std::exp(-v)), 1e-5);
  }
  ops.activation_forward(x, y, Activation::GELU);
  for (int i = 0; i < 1000; ++i) ASSERT_NEAR(y.f32()[i], gelu(x.f32()[i]), 1e-5);
  ops.activation_forward(x, y, Activation::QuickGELU);
  for (int i = 0; i < 1000; ++i) {
    const double v = x.f32()[i];
    ASSERT_NEAR(y.f32()[i], v / (1 + std::exp(-1.702 * v)), 1e-5);
  }
  // GEGLU: [M, 2N] -> hidden * gelu(gate), hidden the first half (diffusers chunk(2, dim=-1))
  Tensor g = randn({3, 10}, 31), gy = Tensor::empty({3, 5});
  ops.geglu_forward(g, gy);
  for (int m = 0; m < 3; ++m)
    for (int j = 0; j < 5; ++j)
      ASSERT_NEAR(gy.f32()[m * 5 + j], g.f32()[m * 10 + j] * gelu(g.f32()[m * 10 + 5 + j]), 1e-5);
}

TEST(Ops, ElementwiseAndResampling) {
  CpuOps ops;
  Tensor a = randn({2, 3, 2, 4}, 40), b = randn({2, 3, 2, 4}, 41), y = Tensor::empty(a.shape());
  ops.add_forward(a, b, y, 0.5f, 2.f);
  for (int i = 0; i < a.numel(); ++i) ASSERT_FLOAT_EQ(y.f32()[i], 0.5f * a.f32()[i] + 2.f * b.f32()[i]);
  Tensor v = randn({2, 4}, 42);
  Tensor x = a.clone();
  ops.add_broadcast_forward(x, v);
  for (int i = 0; i < a.numel(); ++i) ASSERT_FLOAT_EQ(x.f32()[i], a.f32()[i] + v.f32()[(i / 24) * 4 + i % 4]);
  Tensor c = randn({2, 3, 2, 3}, 43), cat = Tensor::empty({2, 3, 2, 7});
  ops.concat_channels_forward(a, c, cat);
  for (int p = 0; p < 12; ++p)
    for (int ch = 0; ch < 7; ++ch)
      ASSERT_EQ(cat.f32()[p * 7 + ch], ch < 4 ? a.f32()[p * 4 + ch] : c.f32()[p * 3 + ch - 4]);
  Tensor up = Tensor::empty({2, 6, 4, 4});
  ops.upsample_nearest2x_forward(a, up);
  for (int bi = 0; bi < 2; ++bi)
    for (int h = 0; h < 6; ++h)
      for (int w = 0; w < 4; ++w)
        for (int ch = 0; ch < 4; ++ch)
          ASSERT_EQ(up.f32()[((bi * 6 + h) * 4 + w) * 4 + ch],
                    a.f32()[((bi * 3 + h / 2) * 2 + w / 2) * 4 + ch]);
  Tensor ids = Tensor::empty({2, 2}, DType::I64);
  const int64_t idv[] = {3, 0, 4, 3};
  std::copy(idv, idv + 4, ids.data<int64_t>());
  Tensor table = randn({5, 6}, 44), e = Tensor::empty({2, 2, 6});
  ops.embedding_forward(ids, table, e);
  for (int i = 0; i < 4; ++i)
    for (int ch = 0; ch < 6; ++ch) ASSERT_EQ(e.f32()[i * 6 + ch], table.f32()[idv[i] * 6 + ch]);
  ids.data<int64_t>()[1] = 5;
  EXPECT_THROW(ops.embedding_forward(ids, table, e), Error);
}

TEST(Ops, TimestepEmbeddingMatchesFormula) {
  CpuOps ops;
  Tensor t = Tensor::from_vector({0.f, 1.f, 999.f}, {3});
  for (bool flip : {true, false})
    for (float shift : {0.f, 1.f})
      for (int dim : {32, 33}) {
        Tensor y = Tensor::empty({3, dim});
        ops.timestep_embedding_forward(t, y, {flip, shift, 1.f, 10000.f});
        const int half = dim / 2;
        for (int b = 0; b < 3; ++b)
          for (int i = 0; i < half; ++i) {
            const double f = std::exp(-std::log(10000.0) * i / (half - shift));
            const double arg = t.f32()[b] * f;
            // |d sin| <= |t| * |d f| with f rounded to float: 999 * 2^-24 relative
            const double tol = 1e-6 + t.f32()[b] * f * 1.2e-7 * 4;
            ASSERT_NEAR(y.f32()[b * dim + i], flip ? std::cos(arg) : std::sin(arg), tol);
            ASSERT_NEAR(y.f32()[b * dim + half + i], flip ? std::sin(arg) : std::cos(arg), tol);
          }
        if (dim % 2) {
          EXPECT_EQ(y.f32()[2 * dim + dim - 1], 0.f);
        }
      }
  // t = 0, flip: [cos 0 = 1 ..., sin 0 = 0 ...]
  Tensor y = Tensor::empty({3, 32});
  ops.timestep_embedding_forward(t, y, {});
  EXPECT_EQ(y.f32()[0], 1.f);
  EXPECT_EQ(y.f32()[16], 0.f);
}
