// kernels/embedding.cu against CpuOps, F32 and BF16, I32 and I64 ids.
// Tolerances:
//   - embedding forward: bit-exact (a row copy).
//   - embedding backward: bit-exact in f32: each table row adds its dy rows in position order, as CpuOps
//     does (BF16 dy: CpuOps on the same bf16 values; the table is f32).
//   - timestep embedding: |err| <= 2e-6 + 1e-6 scale |t| (F32). The emulator calls the same libm as
//     CpuOps (measured exact); on a GPU expf is within 2 ulp and each product rounds, ~4 ulp (5e-7
//     relative) of the argument scale t freq, which reaches 2000 here; sin moves by as much as its
//     argument, so 1e-6 scale |t| is ~8 ulp of the argument. BF16: that plus one bf16 ulp (2^-7 |ref|).
#include <gtest/gtest.h>

#include <vector>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/kernels/elementwise.h"
#include "elementwise_test_util.h"

namespace db {
namespace {

using test::DeviceArray;

std::vector<float> values(const Tensor& t) {
  return std::vector<float>(t.f32(), t.f32() + t.numel());
}

// The ids as a host tensor of dtype id_t and as device bytes.
Tensor host_ids(const std::vector<int64_t>& ids, DType id_t) {
  Tensor t = Tensor::empty({int64_t(ids.size())}, id_t);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (id_t == DType::I32)
      t.data<int32_t>()[i] = int32_t(ids[i]);
    else
      t.data<int64_t>()[i] = ids[i];
  }
  return t;
}

struct DeviceIds {
  DeviceIds(const std::vector<int64_t>& ids, DType id_t) : buf(ids.size() * dtype_size(id_t)) {
    const Tensor t = host_ids(ids, id_t);
    EXPECT_EQ(cudaMemcpy(buf.get(), t.raw(), t.nbytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  test::DeviceBuffer<uint8_t> buf;
};

TEST(KernelEmbedding, TimestepEmbeddingMatchesCpu) {
  CpuOps cpu;
  const std::vector<float> t = {0.f, 999.f, 500.5f, 1.f};
  struct Case {
    int dim;
    bool flip;
    float shift, scale;
  };
  // SD's UNet (320, flip, shift 0) and an odd width with the other options.
  for (Case c : {Case{320, true, 0.f, 1.f}, Case{7, false, 1.f, 2.f}})
    for (DType ty : {DType::F32, DType::BF16}) {
      TimestepEmbeddingParams p;
      p.flip_sin_to_cos = c.flip;
      p.downscale_freq_shift = c.shift;
      p.scale = c.scale;
      p.max_period = 10000.f;
      Tensor y = Tensor::empty({int64_t(t.size()), c.dim});
      cpu.timestep_embedding_forward(Tensor::from_vector(t, {int64_t(t.size())}), y, p);
      test::DeviceBuffer<float> dT(t);
      DeviceArray dY(ty, std::vector<float>(size_t(y.numel()), 9.f));
      ASSERT_EQ(kernels::timestep_embedding(dT.get(), ty, dY.get(), int(t.size()), c.dim, c.flip, c.shift,
                                            c.scale, p.max_period, nullptr),
                cudaSuccess);
      const std::vector<float> got = dY.download(), ref = values(y);
      const std::string what = std::string("timestep ") + dtype_name(ty) + " dim " + std::to_string(c.dim);
      const std::vector<float> want = test::rounded(ref, ty);
      for (size_t i = 0; i < got.size(); ++i) {
        const double tol = 2e-6 + 1e-6 * c.scale * t[i / size_t(c.dim)] +
                           (ty == DType::BF16 ? std::fabs(want[i]) / 128 : 0.0);
        EXPECT_NEAR(got[i], want[i], tol) << what << " element " << i;
      }
    }
}

TEST(KernelEmbedding, ForwardGathersRowsBitExact) {
  CpuOps cpu;
  const int64_t V = 50;
  const std::vector<int64_t> ids = {49, 0, 7, 7, 13, 2, 49, 0, 31, 5, 5, 5, 8, 1};  // 2 x 7 tokens
  // CLIP's width (768) and an odd one; offset 1 misaligns the table and the output.
  for (int C : {768, 5})
    for (DType id_t : {DType::I32, DType::I64})
      for (DType t : {DType::F32, DType::BF16})
        for (size_t offset : {0, 1}) {
          const std::vector<float> table = test::rounded(test::random_floats(size_t(V * C), 7), t);
          Tensor y = Tensor::empty({int64_t(ids.size()), C});
          cpu.embedding_forward(host_ids(ids, id_t), Tensor::from_vector(table, {V, C}), y);
          DeviceIds dIds(ids, id_t);
          DeviceArray dTable(t, table, offset), dY(t, size_t(y.numel()), offset);
          test::DeviceBuffer<int> bad(std::vector<int>{0});
          ASSERT_EQ(kernels::embedding_forward(id_t, dIds.buf.get(), t, dTable.get(), dY.get(),
                                               int64_t(ids.size()), C, V, bad.get(), nullptr),
                    cudaSuccess);
          const std::string what = std::string("embedding ") + dtype_name(id_t) + " " + dtype_name(t) +
                                   " C " + std::to_string(C) + " offset " + std::to_string(offset);
          test::expect_bits_equal(dY.download(), values(y), what);
          EXPECT_EQ(bad.download()[0], 0) << what;
        }
}

TEST(KernelEmbedding, ForwardReportsTheFirstBadIdAndZeroesItsRows) {
  const int64_t V = 10;
  const int C = 16;
  // Bad ids at positions 5 (id V), 2 (-1) and 9: *bad names the smallest, 1 + 2.
  const std::vector<int64_t> ids = {1, 2, -1, 3, 4, V, 6, 7, 8, 1000};
  for (DType id_t : {DType::I32, DType::I64}) {
    const std::vector<float> table = test::random_floats(size_t(V * C), 8);
    DeviceIds dIds(ids, id_t);
    DeviceArray dTable(DType::F32, table), dY(DType::F32, std::vector<float>(ids.size() * C, 9.f));
    test::DeviceBuffer<int> bad(std::vector<int>{0});
    ASSERT_EQ(kernels::embedding_forward(id_t, dIds.buf.get(), DType::F32, dTable.get(), dY.get(),
                                         int64_t(ids.size()), C, V, bad.get(), nullptr),
              cudaSuccess);
    EXPECT_EQ(bad.download()[0], 3) << dtype_name(id_t);
    const std::vector<float> y = dY.download();
    for (size_t i = 0; i < ids.size(); ++i)
      for (int c = 0; c < C; ++c) {
        const bool ok = ids[i] >= 0 && ids[i] < V;
        ASSERT_EQ(y[i * C + c], ok ? table[size_t(ids[i] * C + c)] : 0.f)
            << "position " << i << " channel " << c;
      }
    // A null report pointer is allowed.
    ASSERT_EQ(kernels::embedding_forward(id_t, dIds.buf.get(), DType::F32, dTable.get(), dY.get(),
                                         int64_t(ids.size()), C, V, nullptr, nullptr),
              cudaSuccess);
  }
}

TEST(KernelEmbedding, BackwardScatterAddsInPositionOrderBitExact) {
  CpuOps cpu;
  const int64_t V = 20;
  // Repeated ids (7 three times, 0 twice, 19 twice) in a 2 x 7 token batch.
  const std::vector<int64_t> ids = {7, 0, 19, 7, 3, 0, 12, 19, 7, 4, 5, 6, 8, 9};
  for (int C : {768, 5})
    for (DType id_t : {DType::I32, DType::I64})
      for (DType t : {DType::F32, DType::BF16})
        for (size_t offset : {0, 1}) {
          // Magnitudes spread over 2^6 make the f32 sums order-sensitive.
          std::vector<float> dy = test::random_floats(ids.size() * size_t(C), 9);
          for (size_t i = 0; i < dy.size(); i += 3) dy[i] *= 64.f;
          dy = test::rounded(dy, t);
          const std::vector<float> table0 = test::random_floats(size_t(V * C), 10);
          Tensor dtable = Tensor::from_vector(table0, {V, C});
          cpu.embedding_backward(host_ids(ids, id_t), Tensor::from_vector(dy, {int64_t(ids.size()), C}),
                                 dtable);
          DeviceIds dIds(ids, id_t);
          DeviceArray dDY(t, dy, offset), dTable(DType::F32, table0, offset);
          test::DeviceBuffer<uint8_t> ws(kernels::embedding_backward_workspace(int64_t(ids.size()), V));
          ASSERT_EQ(kernels::embedding_backward(id_t, dIds.buf.get(), t, dDY.get(), dTable.as<float>(),
                                                int64_t(ids.size()), C, V, ws.get(), nullptr),
                    cudaSuccess);
          const std::string what = std::string("embedding_backward ") + dtype_name(id_t) + " " +
                                   dtype_name(t) + " C " + std::to_string(C) + " offset " +
                                   std::to_string(offset);
          test::expect_bits_equal(dTable.download(), values(dtable), what);
        }
}

}  // namespace
}  // namespace db
