// CudaOps: construction, memory ops and the training-step ops.
#include "cuda_ops.h"

#include <cmath>
#include <vector>

#include <nvtx3/nvToolsExt.h>

#include "cuda_check.h"
#include "current_device.h"
#include "dreambooth/kernels/elementwise.h"
#include "dreambooth/kernels/train_step.h"

namespace db::cuda {

CudaOps::CudaOps(int device) : device_(device) {
  use_device(device);
  DB_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  alloc_ = std::make_unique<DeviceAllocator>(device, stream_);
  gemm_ = make_gemm(device, stream_, *alloc_);
  conv_ = make_conv(device, stream_, *alloc_);
  staging_ = std::make_unique<PinnedStaging>(stream_);
  DB_CUDA(cudaEventCreateWithFlags(&reached_, cudaEventDisableTiming));
  DB_CUDA(cudaMalloc(reinterpret_cast<void**>(&bad_id_), sizeof(int)));
  DB_CUDA(cudaMemsetAsync(bad_id_, 0, sizeof(int), stream_));
}

CudaOps::~CudaOps() {
  try {
    use_device(device_);
  } catch (const Error&) {  // a destructor must not throw; the frees below work from any device
  }
  cudaStreamSynchronize(stream_);
  staging_.reset();
  conv_.reset();
  gemm_.reset();
  if (bad_id_) cudaFree(bad_id_);
  if (reached_) cudaEventDestroy(reached_);
  // alloc_'s state outlives this object while tensors hold blocks; it synchronises its stream on release.
  alloc_.reset();
}

Tensor CudaOps::empty(const Shape& shape, DType dtype) {
  use_device(device_);
  return alloc_->empty(shape, dtype);
}

void CudaOps::expect(const Tensor& t, const char* what) const {
  use_device(device_);  // every entry point that launches or copies checks a tensor first
  DB_CHECK(t.defined(), "cuda: ", what, ": undefined tensor");
  DB_CHECK(t.device() == Device::CUDA, "cuda: ", what, ": ", t.desc(),
           " is a host tensor (use upload / to_backend)");
}

void CudaOps::fill(Tensor& t, float value) {
  expect(t, "fill");
  DB_CUDA(kernels::fill(t.dtype(), t.raw(), t.numel(), value, stream_));
}

void CudaOps::copy(const Tensor& src, Tensor& dst) {
  expect(src, "copy src");
  expect(dst, "copy dst");
  DB_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "copy: ", src.desc(), " into ",
           dst.desc());
  DB_CUDA(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDeviceToDevice, stream_));
}

// Between two devices: the copy runs on the source's stream after that stream waited for this one (dst's
// block may still be in use by earlier work here), and this stream then waits for the copy. Peer-to-peer
// DMA when the pair enabled peer access (cudaDeviceEnablePeerAccess, done by the trainer), else the
// driver stages the copy through host memory; either way no host wait.
void CudaOps::copy_from(Ops& from, const Tensor& src, Tensor& dst) {
  if (&from == this) return copy(src, dst);
  auto* other = dynamic_cast<CudaOps*>(&from);
  DB_CHECK(other, "copy_from: from a ", from.name(), " backend to cuda");
  expect(dst, "copy_from dst");
  DB_CHECK(src.defined() && src.device() == Device::CUDA, "copy_from: src ", src.desc());
  DB_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "copy_from: ", src.desc(), " into ",
           dst.desc());
  DB_CUDA(cudaEventRecord(reached_, stream_));
  DB_CUDA(cudaStreamWaitEvent(other->stream_, reached_, 0));
  DB_CUDA(cudaMemcpyPeerAsync(dst.raw(), device_, src.raw(), other->device_, src.nbytes(), other->stream_));
  DB_CUDA(cudaEventRecord(other->reached_, other->stream_));
  DB_CUDA(cudaStreamWaitEvent(stream_, other->reached_, 0));
}

void CudaOps::cast(const Tensor& src, Tensor& dst) {
  expect(src, "cast src");
  expect(dst, "cast dst");
  DB_CHECK(src.shape() == dst.shape(), "cast: ", src.desc(), " into ", dst.desc());
  DB_CUDA(kernels::cast(src.dtype(), src.raw(), dst.dtype(), dst.raw(), src.numel(), stream_));
}

void CudaOps::upload(const void* host, Tensor& dst) {
  expect(dst, "upload");
  staging_->upload(dst.raw(), host, dst.nbytes());
}

void CudaOps::download(const Tensor& src, void* host) {
  expect(src, "download");
  DB_CUDA(cudaMemcpyAsync(host, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
}

void CudaOps::synchronize() {
  use_device(device_);
  int bad = 0;
  DB_CUDA(cudaMemcpyAsync(&bad, bad_id_, sizeof(int), cudaMemcpyDeviceToHost, stream_));
  DB_CUDA(cudaStreamSynchronize(stream_));
  if (bad != 0) {
    DB_CUDA(cudaMemsetAsync(bad_id_, 0, sizeof(int), stream_));
    throw Error("embedding: token id at position ", bad - 1, " is outside the vocabulary");
  }
}

// NVTX v3 is header-only: without a profiler attached a push is a test of a null function pointer.
void CudaOps::range_push(const char* name) {
  nvtxRangePushA(name);
}

void CudaOps::range_pop() {
  nvtxRangePop();
}

// ---- the training step ----

void CudaOps::mse_loss_forward_backward(const Tensor& pred, const Tensor& target,
                                        const std::vector<double>& grad_weight, Tensor& dpred,
                                        Tensor& sample_mse) {
  for (const Tensor* t :
       {&pred, &target, static_cast<const Tensor*>(&dpred), static_cast<const Tensor*>(&sample_mse)})
    expect(*t, "mse");
  const int64_t S = pred.dim(0);
  DB_CHECK(target.shape() == pred.shape() && dpred.shape() == pred.shape() && target.dtype() == DType::F32 &&
               dpred.dtype() == pred.dtype() && sample_mse.dtype() == DType::F32 && sample_mse.numel() == S &&
               int64_t(grad_weight.size()) == S,
           "mse: pred ", pred.desc(), ", target ", target.desc(), ", dpred ", dpred.desc(), ", sample_mse ",
           sample_mse.desc(), ", ", grad_weight.size(), " weights");
  const int64_t n = S ? pred.numel() / S : 0;
  std::vector<float> k(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s)
    k[size_t(s)] = float(2.0 * grad_weight[size_t(s)] / double(n));  // as the CPU
  // upload() stages through pinned memory: `k` may go out of scope at once.
  Tensor kd = empty({S}, DType::F32);
  upload(k.data(), kd);
  std::shared_ptr<void> ws = scratch(kernels::mse_loss_workspace(int(S), n));
  DB_CUDA(kernels::mse_loss_forward_backward(pred.dtype(), pred.raw(), target.data<float>(), kd.data<float>(),
                                             dpred.raw(), sample_mse.data<float>(), int(S), n, ws.get(),
                                             stream_));
}

void CudaOps::sum_of_squares(const Tensor& x, Tensor& out) {
  expect(x, "sum_of_squares");
  expect(out, "sum_of_squares out");
  DB_CHECK(x.dtype() == DType::F32 && out.dtype() == DType::F64 && out.numel() == 1,
           "sum_of_squares: ", x.desc(), " -> ", out.desc(), " (expected f32 -> f64[1])");
  std::shared_ptr<void> ws = scratch(kernels::sum_of_squares_workspace(x.numel()));
  DB_CUDA(kernels::sum_of_squares(x.data<float>(), x.numel(), out.data<double>(), ws.get(), stream_));
}

void CudaOps::clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) {
  for (const Tensor* t : {&sumsq, &check, static_cast<const Tensor*>(&coef)}) expect(*t, "clip_and_check");
  DB_CHECK(sumsq.dtype() == DType::F64 && check.dtype() == DType::F32 && coef.dtype() == DType::F32 &&
               coef.numel() == 2,
           "clip_and_check: ", sumsq.desc(), ", ", check.desc(), " -> ", coef.desc());
  DB_CUDA(kernels::clip_and_check(sumsq.data<double>(), int(sumsq.numel()), check.data<float>(),
                                  check.numel(), max_norm, coef.data<float>(), stream_));
}

void CudaOps::adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                         const AdamWStep& c, const Tensor& coef) {
  for (const Tensor* t : {static_cast<const Tensor*>(&master), &grad, static_cast<const Tensor*>(&m),
                          static_cast<const Tensor*>(&v), &coef})
    expect(*t, "adamw");
  const int64_t n = master.numel();
  DB_CHECK(master.dtype() == DType::F32 && grad.dtype() == DType::F32 && m.dtype() == DType::F32 &&
               v.dtype() == DType::F32 && grad.numel() == n && m.numel() == n && v.numel() == n,
           "adamw: buffers ", master.desc(), ", ", grad.desc(), ", ", m.desc(), ", ", v.desc());
  DB_CHECK(!working || (working->numel() == n && working->device() == Device::CUDA), "adamw: working copy ",
           working ? working->desc() : "");
  // The scalars exactly as CpuOps::adamw_step forms them (double, rounded once to float).
  const kernels::AdamWScalars s = kernels::adamw_scalars(c);
  DB_CUDA(kernels::adamw_step(master.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                              working ? working->dtype() : DType::F32, working ? working->raw() : nullptr, n,
                              s, coef.data<float>(), stream_));
}

}  // namespace db::cuda

namespace db {

std::unique_ptr<Ops> make_cuda_ops(int device) {
  return std::make_unique<cuda::CudaOps>(device);
}

}  // namespace db
