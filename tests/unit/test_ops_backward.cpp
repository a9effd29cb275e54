// OpsBackward.*: CPU backward ops against torch autograd (tests/reference/make_ops_grad_golden.py).
//
// Tolerance: relative L2 <= 1e-5 per gradient. Both sides are fp32 with different summation orders
// (BLAS blocking, double accumulators here vs float ones in torch); with reductions of <= a few hundred
// terms the expected relative error is ~1e-7 and 1e-5 leaves room without hiding a wrong index.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "test_helpers.h"

using namespace db;
using db::test::expect_close;
using db::test::Golden;
using db::test::zeros_like;

namespace {

constexpr double kTol = 1e-5;

const Golden& golden() {
  static const Golden g("ops_grad/ops_grad.safetensors");
  return g;
}

Tensor G(const std::string& name) {
  return golden()[name];
}

// Parameter grads accumulate: start them from a known non-zero value and subtract it after.
Tensor filled(const Tensor& like, float v) {
  Tensor t = Tensor::empty(like.shape());
  t.fill(v);
  return t;
}
Tensor minus(const Tensor& a, float v) {
  Tensor t = a.clone();
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] -= v;
  return t;
}

}  // namespace

TEST(OpsBackward, Linear) {
  CpuOps ops;
  Tensor x = G("linear.x"), w = G("linear.w"), dy = G("linear.dy");
  Tensor dx = zeros_like(x), dw = filled(w, 0.5f), db = filled(G("linear.b"), -0.25f);
  ops.linear_backward(dy, x, w, &dx, &dw, &db);
  expect_close("linear.dx", dx, G("linear.dx"), kTol);
  expect_close("linear.dw (accumulated)", minus(dw, 0.5f), G("linear.dw"), kTol);
  expect_close("linear.db (accumulated)", minus(db, -0.25f), G("linear.db"), kTol);
  Tensor dx2 = filled(x, 7.f);  // dx overwrites; null grads are skipped
  ops.linear_backward(dy, x, w, &dx2, nullptr, nullptr);
  expect_close("linear.dx (overwrite)", dx2, G("linear.dx"), kTol);
}

TEST(OpsBackward, Conv2d) {
  CpuOps ops;
  struct Case {
    const char* name;
    Conv2dGeometry g;
  };
  const Case cases[] = {{"conv_k3s1p1", Conv2dGeometry::same(1)},
                        {"conv_k3s2p1", Conv2dGeometry::same(1, 2)},
                        {"conv_k3s2p1_odd", Conv2dGeometry::same(1, 2)},
                        {"conv_k3s2_asym", {2, 0, 1, 0, 1}},
                        {"conv_k1", Conv2dGeometry::same(0)}};
  for (const Case& c : cases) {
    const std::string n = c.name;
    Tensor x = G(n + ".x"), w = G(n + ".w"), b = G(n + ".b"), dy = G(n + ".dy");
    Tensor y = Tensor::empty(dy.shape());
    ops.conv2d_forward(x, w, b, y, c.g);
    expect_close(n + ".y", y, G(n + ".y"), kTol);
    Tensor dx = filled(x, 3.f), dw = filled(w, 0.5f), db = filled(b, 1.f);
    ops.conv2d_backward(dy, x, w, &dx, &dw, &db, c.g);
    expect_close(n + ".dx", dx, G(n + ".dx"), kTol);
    expect_close(n + ".dw", minus(dw, 0.5f), G(n + ".dw"), kTol);
    expect_close(n + ".db", minus(db, 1.f), G(n + ".db"), kTol);
  }
}

TEST(OpsBackward, GroupNorm) {
  CpuOps ops;
  for (const char* name : {"group_norm", "group_norm_silu"}) {
    const std::string n = name;
    const Activation act = n == "group_norm_silu" ? Activation::SiLU : Activation::None;
    Tensor x = G(n + ".x"), gamma = G(n + ".gamma"), beta = G(n + ".beta"), dy = G(n + ".dy");
    const int B = int(x.dim(0)), groups = 4;
    Tensor y = zeros_like(x), mean = Tensor::empty({B, groups}), rstd = Tensor::empty({B, groups});
    ops.group_norm_forward(x, gamma, beta, y, groups, 1e-6f, act, &mean, &rstd);
    expect_close(n + ".y", y, G(n + ".y"), kTol);
    Tensor dx = zeros_like(x), dgamma = filled(gamma, 0.5f), dbeta = filled(beta, 0.5f);
    ops.group_norm_backward(dy, x, gamma, beta, mean, rstd, groups, act, &dx, &dgamma, &dbeta);
    expect_close(n + ".dx", dx, G(n + ".dx"), kTol);
    expect_close(n + ".dgamma", minus(dgamma, 0.5f), G(n + ".dgamma"), kTol);
    expect_close(n + ".dbeta", minus(dbeta, 0.5f), G(n + ".dbeta"), kTol);
  }
}

TEST(OpsBackward, LayerNorm) {
  CpuOps ops;
  Tensor x = G("layer_norm.x"), gamma = G("layer_norm.gamma"), beta = G("layer_norm.beta"),
         dy = G("layer_norm.dy");
  const int64_t M = x.numel() / x.dim(-1);
  Tensor y = zeros_like(x), mean = Tensor::empty({M}), rstd = Tensor::empty({M});
  ops.layer_norm_forward(x, gamma, beta, y, 1e-5f, &mean, &rstd);
  expect_close("layer_norm.y", y, G("layer_norm.y"), kTol);
  Tensor dx = zeros_like(x), dgamma = filled(gamma, 0.5f), dbeta = filled(beta, 0.5f);
  ops.layer_norm_backward(dy, x, gamma, mean, rstd, &dx, &dgamma, &dbeta);
  expect_close("layer_norm.dx", dx, G("layer_norm.dx"), kTol);
  expect_close("layer_norm.dgamma", minus(dgamma, 0.5f), G("layer_norm.dgamma"), kTol);
  expect_close("layer_norm.dbeta", minus(dbeta, 0.5f), G("layer_norm.dbeta"), kTol);
}

TEST(OpsBackward, Attention) {
  CpuOps ops;
  for (const char* name : {"attn_self", "attn_cross", "attn_causal"}) {
    const std::string n = name;
    Tensor q = G(n + ".q"), k = G(n + ".k"), v = G(n + ".v"), dout = G(n + ".dout");
    AttentionParams p;
    p.heads = 2;
    p.causal = n == "attn_causal";
    Tensor out = zeros_like(q), lse = Tensor::empty({q.dim(0), p.heads, q.dim(1)});
    ops.attention_forward(q, k, v, out, p, &lse);
    expect_close(n + ".out", out, G(n + ".out"), kTol);
    Tensor dq = filled(q, 9.f), dk = filled(k, 9.f), dv = filled(v, 9.f);  // overwritten
    ops.attention_backward(dout, q, k, v, out, lse, p, dq, dk, dv);
    expect_close(n + ".dq", dq, G(n + ".dq"), kTol);
    expect_close(n + ".dk", dk, G(n + ".dk"), kTol);
    expect_close(n + ".dv", dv, G(n + ".dv"), kTol);
  }
}

TEST(OpsBackward, Activations) {
  CpuOps ops;
  const std::pair<const char*, Activation> cases[] = {
      {"silu", Activation::SiLU}, {"gelu", Activation::GELU}, {"quick_gelu", Activation::QuickGELU}};
  for (const auto& [name, act] : cases) {
    const std::string n = name;
    Tensor x = G(n + ".x"), dy = G(n + ".dy"), dx = zeros_like(x);
    ops.activation_backward(x, dy, dx, act);
    expect_close(n + ".dx", dx, G(n + ".dx"), kTol);
    Tensor inplace = dy.clone();  // dx may alias dy
    ops.activation_backward(x, inplace, inplace, act);
    expect_close(n + ".dx (in place)", inplace, G(n + ".dx"), kTol);
  }
}

TEST(OpsBackward, Geglu) {
  CpuOps ops;
  Tensor x = G("geglu.x"), dy = G("geglu.dy"), y = zeros_like(dy), dx = zeros_like(x);
  ops.geglu_forward(x, y);
  expect_close("geglu.y", y, G("geglu.y"), kTol);
  ops.geglu_backward(x, dy, dx);
  expect_close("geglu.dx", dx, G("geglu.dx"), kTol);
}

TEST(OpsBackward, AddBroadcastConcatUpsample) {
  CpuOps ops;
  Tensor dv = filled(G("add_broadcast.v"), 5.f);
  ops.add_broadcast_backward(G("add_broadcast.dy"), dv);
  expect_close("add_broadcast.dv", dv, G("add_broadcast.dv"), kTol);

  Tensor da = zeros_like(G("concat.a")), db = zeros_like(G("concat.b"));
  ops.concat_channels_backward(G("concat.dy"), &da, &db);
  expect_close("concat.da", da, G("concat.da"), 0);
  expect_close("concat.db", db, G("concat.db"), 0);
  Tensor db_only = zeros_like(db);
  ops.concat_channels_backward(G("concat.dy"), nullptr, &db_only);
  expect_close("concat.db (da skipped)", db_only, G("concat.db"), 0);

  Tensor dx = zeros_like(G("upsample.x"));
  ops.upsample_nearest2x_backward(G("upsample.dy"), dx);
  expect_close("upsample.dx", dx, G("upsample.dx"), kTol);
}

TEST(OpsBackward, Embedding) {
  CpuOps ops;
  Tensor idf = G("embedding.ids"), ids = Tensor::empty(idf.shape(), DType::I64);
  for (int64_t i = 0; i < idf.numel(); ++i) ids.data<int64_t>()[i] = int64_t(idf.f32()[i]);
  Tensor dtable = filled(G("embedding.table"), 0.5f);
  ops.embedding_backward(ids, G("embedding.dy"), dtable);
  expect_close("embedding.dtable", minus(dtable, 0.5f), G("embedding.dtable"), kTol);
  ids.data<int64_t>()[3] = 11;  // out of range
  EXPECT_THROW(ops.embedding_backward(ids, G("embedding.dy"), dtable), Error);
}

// Same bits for 1 and 3 OpenMP threads: every gradient element is reduced by one thread in a fixed
// order. Shapes are above kCpuParallelMinWork so the loops really run in parallel. OpenBLAS's own
// threading is left as it is: its GEMMs are reproducible for a fixed OpenBLAS thread count only (the
// chunked tests below change in the last bits with OPENBLAS_NUM_THREADS=1).
TEST(OpsBackward, DeterministicAcrossThreadCounts) {
  CpuOps ops;
  uint32_t st = 3;
  auto rnd = [&](const Shape& s) {
    Tensor t = Tensor::empty(s);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.f32()[i] = float((st = st * 1664525u + 1013904223u) >> 8) / 8388608.f - 1.f;
    return t;
  };
  const Tensor cx = rnd({2, 24, 24, 16}), cw = rnd({12, 3, 3, 16}), cdy1 = rnd({2, 24, 24, 12}),
               cdy2 = rnd({2, 12, 12, 12});
  const Tensor gx = rnd({2, 32, 32, 32}), gamma = rnd({32}), beta = rnd({32}), gdy = rnd({2, 32, 32, 32});
  const Tensor lx = rnd({256, 160}), ldy = rnd({256, 160}), lgamma = rnd({160});
  const Tensor q = rnd({1, 256, 16}), k = rnd({1, 256, 16}), v = rnd({1, 256, 16}), dout = rnd({1, 256, 16});
  Tensor ids = Tensor::empty({300}, DType::I32);
  for (int i = 0; i < 300; ++i) ids.data<int32_t>()[i] = (i * 7) % 13;
  const Tensor edy = rnd({300, 128});
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    std::vector<Tensor> r;
    for (const auto& [dy, g] :
         {std::pair{cdy1, Conv2dGeometry::same(1)}, {cdy2, Conv2dGeometry{2, 0, 1, 0, 1}}}) {
      Tensor dx = zeros_like(cx), dw = zeros_like(cw), db = Tensor::zeros({12});
      ops.conv2d_backward(dy, cx, cw, &dx, &dw, &db, g);
      r.insert(r.end(), {dx, dw, db});
    }
    Tensor y = zeros_like(gx), mean = Tensor::empty({2, 8}), rstd = Tensor::empty({2, 8});
    ops.group_norm_forward(gx, gamma, beta, y, 8, 1e-6f, Activation::SiLU, &mean, &rstd);
    Tensor dx = zeros_like(gx), dg = zeros_like(gamma), dbt = zeros_like(beta);
    ops.group_norm_backward(gdy, gx, gamma, beta, mean, rstd, 8, Activation::SiLU, &dx, &dg, &dbt);
    r.insert(r.end(), {dx, dg, dbt});
    Tensor lm = Tensor::empty({256}), lr = Tensor::empty({256}), ly = zeros_like(lx);
    ops.layer_norm_forward(lx, lgamma, lgamma, ly, 1e-5f, &lm, &lr);
    Tensor ldx = zeros_like(lx), ldg = zeros_like(lgamma), ldb = zeros_like(lgamma);
    ops.layer_norm_backward(ldy, lx, lgamma, lm, lr, &ldx, &ldg, &ldb);
    r.insert(r.end(), {ldx, ldg, ldb});
    AttentionParams p;
    p.heads = 2;
    p.causal = true;
    Tensor out = zeros_like(q), lse = Tensor::empty({1, 2, 256});
    ops.attention_forward(q, k, v, out, p, &lse);
    Tensor dq = zeros_like(q), dk = zeros_like(k), dv = zeros_like(v);
    ops.attention_backward(dout, q, k, v, out, lse, p, dq, dk, dv);
    r.insert(r.end(), {dq, dk, dv});
    Tensor dtable = Tensor::zeros({13, 128});
    ops.embedding_backward(ids, edy, dtable);
    r.push_back(dtable);
    return r;
  };
  const int saved = omp_get_max_threads();
  auto a = run(1), b = run(3);
  omp_set_num_threads(saved);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()), 0) << "tensor " << i;
}

// Inputs wide enough (I = 1024: 9216-float im2col rows, 910 pixels per 32 MiB chunk) that the backward
// runs over several chunks of output pixels, against direct loops in double.
TEST(OpsBackward, Conv2dChunkedMatchesNaive) {
  CpuOps ops;
  const int64_t B = 1, I = 1024, O = 3, KH = 3, KW = 3;
  for (const Conv2dGeometry& g : {Conv2dGeometry::same(1), Conv2dGeometry{2, 0, 1, 0, 1}}) {
    const int64_t H = g.stride == 1 ? 31 : 62, W = g.stride == 1 ? 33 : 64;
    const int64_t Ho = g.out_h(int(H), int(KH)), Wo = g.out_w(int(W), int(KW));
    ASSERT_GT(Ho * Wo, 910);
    Tensor x = Tensor::empty({B, H, W, I}), w = Tensor::empty({O, KH, KW, I}),
           dy = Tensor::empty({B, Ho, Wo, O});
    uint32_t s = 1;
    for (Tensor* t : {&x, &w, &dy})
      for (int64_t i = 0; i < t->numel(); ++i)
        t->f32()[i] = float((s = s * 1664525u + 1013904223u) >> 8) / 16777216.f - 0.5f;
    Tensor dx = Tensor::empty(x.shape()), dw = Tensor::zeros(w.shape());
    ops.conv2d_backward(dy, x, w, &dx, &dw, nullptr, g);
    std::vector<double> rdx(size_t(x.numel())), rdw(size_t(w.numel()));
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t ih = oh * g.stride - g.pad_top + kh, iw = ow * g.stride - g.pad_left + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            for (int64_t o = 0; o < O; ++o) {
              const double d = dy.f32()[(oh * Wo + ow) * O + o];
              const float* xr = x.f32() + (ih * W + iw) * I;
              const float* wr = w.f32() + ((o * KH + kh) * KW + kw) * I;
              double* dxr = rdx.data() + (ih * W + iw) * I;
              double* dwr = rdw.data() + ((o * KH + kh) * KW + kw) * I;
              for (int64_t i = 0; i < I; ++i) {
                dxr[i] += d * wr[i];
                dwr[i] += d * xr[i];
              }
            }
          }
    Tensor ref_dx = Tensor::empty(x.shape()), ref_dw = Tensor::empty(w.shape());
    for (int64_t i = 0; i < x.numel(); ++i) ref_dx.f32()[i] = float(rdx[size_t(i)]);
    for (int64_t i = 0; i < w.numel(); ++i) ref_dw.f32()[i] = float(rdw[size_t(i)]);
    expect_close("chunked conv stride " + std::to_string(g.stride) + " dx", dx, ref_dx, kTol);
    expect_close("chunked conv stride " + std::to_string(g.stride) + " dw", dw, ref_dw, kTol);
  }
}

// Enough queries x keys (4200^2 > the 16M-float score buffer) that the backward runs over two query
// chunks, dK/dV accumulating across them, with the causal mask; against direct loops in double.
TEST(OpsBackward, AttentionChunkedMatchesNaive) {
  CpuOps ops;
  const int64_t T = 4200, D = 2;
  AttentionParams p;
  p.heads = 1;
  p.causal = true;
  Tensor q = Tensor::empty({1, T, D}), k = Tensor::empty({1, T, D}), v = Tensor::empty({1, T, D}),
         dout = Tensor::empty({1, T, D});
  uint32_t st = 7;
  for (Tensor* t : {&q, &k, &v, &dout})
    for (int64_t i = 0; i < t->numel(); ++i)
      t->f32()[i] = float((st = st * 1664525u + 1013904223u) >> 8) / 8388608.f - 1.f;
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({1, 1, T});
  ops.attention_forward(q, k, v, out, p, &lse);
  Tensor dq = Tensor::empty(q.shape()), dk = Tensor::empty(k.shape()), dv = Tensor::empty(v.shape());
  ops.attention_backward(dout, q, k, v, out, lse, p, dq, dk, dv);

  const double scale = 1.0 / std::sqrt(double(D));
  const float *Q = q.f32(), *K = k.f32(), *V = v.f32(), *dO = dout.f32();
  const size_t n = size_t(T * D);
  std::vector<double> rdq(n), rdk(n), rdv(n), P(static_cast<size_t>(T)), dP(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    double mx = -1e300, sum = 0, Di = 0;
    for (int64_t j = 0; j <= i; ++j) {
      P[j] = scale * (double(Q[i * D]) * K[j * D] + double(Q[i * D + 1]) * K[j * D + 1]);
      mx = std::max(mx, P[j]);
    }
    for (int64_t j = 0; j <= i; ++j) sum += (P[j] = std::exp(P[j] - mx));
    for (int64_t j = 0; j <= i; ++j) {
      P[j] /= sum;
      dP[j] = double(dO[i * D]) * V[j * D] + double(dO[i * D + 1]) * V[j * D + 1];
      Di += P[j] * dP[j];
    }
    for (int64_t j = 0; j <= i; ++j) {
      const double ds = P[j] * (dP[j] - Di);
      for (int64_t d = 0; d < D; ++d) {
        rdq[size_t(i * D + d)] += scale * ds * K[j * D + d];
        rdk[size_t(j * D + d)] += scale * ds * Q[i * D + d];
        rdv[size_t(j * D + d)] += P[j] * dO[i * D + d];
      }
    }
  }
  auto to_tensor = [&](const std::vector<double>& r) {
    Tensor t = Tensor::empty({1, T, D});
    for (int64_t i = 0; i < T * D; ++i) t.f32()[i] = float(r[size_t(i)]);
    return t;
  };
  expect_close("chunked causal attention dq", dq, to_tensor(rdq), kTol);
  expect_close("chunked causal attention dk", dk, to_tensor(rdk), kTol);
  expect_close("chunked causal attention dv", dv, to_tensor(rdv), kTol);
}
