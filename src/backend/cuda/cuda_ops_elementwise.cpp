// CudaOps elementwise, layout and embedding ops: shape checks, then one kernel each.
#include "cuda_check.h"
#include "cuda_ops.h"
#include "dreambooth/kernels/elementwise.h"

namespace db::cuda {
namespace {

kernels::Act act_of(Activation a) {
  switch (a) {
    case Activation::None:
      return kernels::Act::None;
    case Activation::SiLU:
      return kernels::Act::SiLU;
    case Activation::GELU:
      return kernels::Act::GELU;
    case Activation::QuickGELU:
      return kernels::Act::QuickGELU;
  }
  throw Error("activation: unknown kind");
}

}  // namespace

void CudaOps::activation_forward(const Tensor& x, Tensor& y, Activation act) {
  expect(x, "activation x");
  DB_CHECK(y.numel() == x.numel() && y.dtype() == x.dtype(), "activation: output ", y.desc(), " for ",
           x.desc());
  DB_CUDA(kernels::activation_forward(x.dtype(), x.raw(), y.raw(), x.numel(), act_of(act), stream_));
}

void CudaOps::activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation act) {
  expect(x, "activation_backward x");
  DB_CHECK(dy.numel() == x.numel() && dx.numel() == x.numel() && dy.dtype() == x.dtype() &&
               dx.dtype() == x.dtype(),
           "activation_backward: x ", x.desc(), ", dy ", dy.desc(), ", dx ", dx.desc());
  DB_CUDA(
      kernels::activation_backward(x.dtype(), x.raw(), dy.raw(), dx.raw(), x.numel(), act_of(act), stream_));
}

void CudaOps::geglu_forward(const Tensor& x, Tensor& y) {
  expect(x, "geglu x");
  const int64_t N = y.dim(-1), M = y.numel() / N;
  DB_CHECK(x.dim(-1) == 2 * N && x.numel() == 2 * M * N && y.dtype() == x.dtype(), "geglu: x ", x.desc(),
           " -> ", y.desc());
  DB_CUDA(kernels::geglu_forward(x.dtype(), x.raw(), y.raw(), M, N, stream_));
}

void CudaOps::geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) {
  expect(x, "geglu_backward x");
  const int64_t N = dy.dim(-1), M = dy.numel() / N;
  DB_CHECK(
      x.dim(-1) == 2 * N && dx.shape() == x.shape() && dx.dtype() == x.dtype() && dy.dtype() == x.dtype(),
      "geglu_backward: x ", x.desc(), ", dy ", dy.desc(), ", dx ", dx.desc());
  DB_CUDA(kernels::geglu_backward(x.dtype(), x.raw(), dy.raw(), dx.raw(), M, N, stream_));
}

void CudaOps::add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha, float beta) {
  expect(a, "add a");
  expect(b, "add b");
  DB_CHECK(a.numel() == b.numel() && y.numel() == a.numel(), "add: ", a.desc(), " + ", b.desc(), " -> ",
           y.desc());
  DB_CUDA(kernels::add(a.dtype(), a.raw(), b.dtype(), b.raw(), y.dtype(), y.raw(), a.numel(), alpha, beta,
                       stream_));
}

void CudaOps::add_broadcast_forward(Tensor& x, const Tensor& v) {
  expect(x, "add_broadcast x");
  const int64_t B = x.dim(0), C = x.dim(-1), N = x.numel() / (B * C);
  DB_CHECK(v.numel() == B * C && v.dtype() == x.dtype(), "add_broadcast: v ", v.desc(), " for x ", x.desc());
  DB_CUDA(kernels::add_broadcast_forward(x.dtype(), x.raw(), v.raw(), int(B), N, int(C), stream_));
}

void CudaOps::add_broadcast_backward(const Tensor& dy, Tensor& dv) {
  expect(dy, "add_broadcast_backward dy");
  const int64_t B = dy.dim(0), C = dy.dim(-1), N = dy.numel() / (B * C);
  DB_CHECK(dv.numel() == B * C && dv.dtype() == dy.dtype(), "add_broadcast_backward: dv ", dv.desc(), " for ",
           dy.desc());
  std::shared_ptr<void> ws = scratch(kernels::add_broadcast_backward_workspace(int(B), N, int(C)));
  DB_CUDA(
      kernels::add_broadcast_backward(dy.dtype(), dy.raw(), dv.raw(), int(B), N, int(C), ws.get(), stream_));
}

void CudaOps::scale_forward(const Tensor& x, Tensor& y, float s) {
  expect(x, "scale x");
  DB_CHECK(y.numel() == x.numel() && y.dtype() == x.dtype(), "scale: ", x.desc(), " -> ", y.desc());
  DB_CUDA(kernels::scale(x.dtype(), x.raw(), y.raw(), x.numel(), s, stream_));
}

void CudaOps::concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) {
  expect(a, "concat a");
  const int64_t Ca = a.dim(-1), Cb = b.dim(-1), rows = a.numel() / Ca;
  DB_CHECK(b.numel() / Cb == rows && y.numel() == rows * (Ca + Cb) && y.dim(-1) == Ca + Cb &&
               b.dtype() == a.dtype() && y.dtype() == a.dtype(),
           "concat: ", a.desc(), " + ", b.desc(), " -> ", y.desc());
  DB_CUDA(kernels::concat_channels_forward(a.dtype(), a.raw(), b.raw(), y.raw(), rows, int(Ca), int(Cb),
                                           stream_));
}

void CudaOps::concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) {
  expect(dy, "concat_backward dy");
  DB_CHECK(da || db, "concat_backward: no output");
  const int64_t C = dy.dim(-1), rows = dy.numel() / C;
  const int64_t Ca = da ? da->dim(-1) : C - db->dim(-1), Cb = C - Ca;
  DB_CHECK((!da || da->numel() == rows * Ca) && (!db || db->numel() == rows * Cb),
           "concat_backward: ", dy.desc(), " -> ", da ? da->desc() : "-", " + ", db ? db->desc() : "-");
  DB_CUDA(kernels::concat_channels_backward(dy.dtype(), dy.raw(), da ? da->raw() : nullptr,
                                            db ? db->raw() : nullptr, rows, int(Ca), int(Cb), stream_));
}

void CudaOps::upsample_nearest2x_forward(const Tensor& x, Tensor& y) {
  expect(x, "upsample x");
  DB_CHECK(x.ndim() == 4 && y.shape() == (Shape{x.dim(0), 2 * x.dim(1), 2 * x.dim(2), x.dim(3)}) &&
               y.dtype() == x.dtype(),
           "upsample: ", x.desc(), " -> ", y.desc());
  DB_CUDA(kernels::upsample_nearest2x_forward(x.dtype(), x.raw(), y.raw(), int(x.dim(0)), int(x.dim(1)),
                                              int(x.dim(2)), int(x.dim(3)), stream_));
}

void CudaOps::upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) {
  expect(dy, "upsample_backward dy");
  DB_CHECK(dx.ndim() == 4 && dy.shape() == (Shape{dx.dim(0), 2 * dx.dim(1), 2 * dx.dim(2), dx.dim(3)}) &&
               dx.dtype() == dy.dtype(),
           "upsample_backward: ", dy.desc(), " -> ", dx.desc());
  DB_CUDA(kernels::upsample_nearest2x_backward(dy.dtype(), dy.raw(), dx.raw(), int(dx.dim(0)), int(dx.dim(1)),
                                               int(dx.dim(2)), int(dx.dim(3)), stream_));
}

void CudaOps::timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) {
  expect(t, "timestep_embedding t");
  DB_CHECK(t.dtype() == DType::F32 && y.ndim() == 2 && y.dim(0) == t.numel(), "timestep_embedding: t ",
           t.desc(), " -> ", y.desc());
  DB_CUDA(kernels::timestep_embedding(t.data<float>(), y.dtype(), y.raw(), int(y.dim(0)), int(y.dim(1)),
                                      p.flip_sin_to_cos, p.downscale_freq_shift, p.scale, p.max_period,
                                      stream_));
}

void CudaOps::embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) {
  expect(ids, "embedding ids");
  const int64_t V = table.dim(0), C = table.dim(1), n = ids.numel();
  DB_CHECK((ids.dtype() == DType::I32 || ids.dtype() == DType::I64) && y.numel() == n * C && y.dim(-1) == C &&
               y.dtype() == table.dtype(),
           "embedding: ids ", ids.desc(), ", table ", table.desc(), " -> ", y.desc());
  DB_CUDA(kernels::embedding_forward(ids.dtype(), ids.raw(), table.dtype(), table.raw(), y.raw(), n, int(C),
                                     V, bad_id_, stream_));
}

void CudaOps::embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  expect(ids, "embedding_backward ids");
  const int64_t V = dtable.dim(0), C = dtable.dim(1), n = ids.numel();
  DB_CHECK(dy.numel() == n * C && dtable.dtype() == DType::F32, "embedding_backward: ids ", ids.desc(),
           ", dy ", dy.desc(), " -> ", dtable.desc());
  std::shared_ptr<void> ws = scratch(kernels::embedding_backward_workspace(n, V));
  DB_CUDA(kernels::embedding_backward(ids.dtype(), ids.raw(), dy.dtype(), dy.raw(), dtable.data<float>(), n,
                                      int(C), V, ws.get(), stream_));
}

}  // namespace db::cuda
