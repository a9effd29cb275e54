#pragma once
// CudaOps: the Ops backend on one NVIDIA GPU (issue 14), bound to it: each entry point makes its device
// current first (a thread-local compare when it already is), so several CudaOps share a thread. Every op runs
// on one stream: GEMMs through Gemm (cuBLASLt), convolutions through Conv (cuDNN), everything else through
// the project's kernels (include/dreambooth/kernels/). bf16 activations and working weights, f32 statistics,
// gradients and optimizer state (backend/ops.h precision contract). Memory from a stream-ordered caching
// allocator. The same source runs on the CUDA emulator in the emulated build (`build/emu/dreambooth`): there
// Gemm and Conv are the CPU reference on the emulated device memory.
#include <cuda_runtime_api.h>

#include <memory>

#include "conv.h"
#include "device_allocator.h"
#include "dreambooth/backend/ops.h"
#include "gemm.h"
#include "pinned_staging.h"

namespace db::cuda {

class CudaOps final : public Ops {
 public:
  explicit CudaOps(int device);
  ~CudaOps() override;
  Device device() const override { return Device::CUDA; }
  const char* name() const override { return "cuda"; }
  DType activation_dtype() const override { return act_; }
  // Tests: run every op in f32 instead of bf16 (checks CudaOps against CpuOps at fp32 tolerance).
  void set_activation_dtype(DType t) { act_ = t; }

  // ---- memory (cuda_ops.cpp) ----
  Tensor empty(const Shape& shape, DType dtype = DType::F32) override;
  void fill(Tensor& t, float value) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void copy_from(Ops& from, const Tensor& src, Tensor& dst) override;
  void cast(const Tensor& src, Tensor& dst) override;
  void upload(const void* host, Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  void synchronize() override;
  MemoryStats memory_stats() const override { return alloc_->stats(); }
  void reset_peak_memory() override { alloc_->reset_peak(); }
  void range_push(const char* name) override;
  void range_pop() override;

  // ---- layers (cuda_ops_nn.cpp) ----
  void linear_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y) override;
  void linear_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw,
                       Tensor* db) override;
  void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                      const Conv2dGeometry& g) override;
  void conv2d_backward(const Tensor& dy, const Tensor& x, const Tensor& w, Tensor* dx, Tensor* dw, Tensor* db,
                       const Conv2dGeometry& g) override;
  void group_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y, int groups,
                          float eps, Activation act, Tensor* mean, Tensor* rstd) override;
  void group_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& beta,
                           const Tensor& mean, const Tensor& rstd, int groups, Activation act, Tensor* dx,
                           Tensor* dgamma, Tensor* dbeta) override;
  void layer_norm_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Tensor& y, float eps,
                          Tensor* mean, Tensor* rstd) override;
  void layer_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& gamma, const Tensor& mean,
                           const Tensor& rstd, Tensor* dx, Tensor* dgamma, Tensor* dbeta) override;
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                         const AttentionParams& p, Tensor* lse) override;
  void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor& out, const Tensor& lse, const AttentionParams& p, Tensor& dq,
                          Tensor& dk, Tensor& dv) override;

  // ---- elementwise, layout, embeddings (cuda_ops_elementwise.cpp) ----
  void activation_forward(const Tensor& x, Tensor& y, Activation act) override;
  void activation_backward(const Tensor& x, const Tensor& dy, Tensor& dx, Activation act) override;
  void geglu_forward(const Tensor& x, Tensor& y) override;
  void geglu_backward(const Tensor& x, const Tensor& dy, Tensor& dx) override;
  void add_forward(const Tensor& a, const Tensor& b, Tensor& y, float alpha, float beta) override;
  void add_broadcast_forward(Tensor& x, const Tensor& v) override;
  void add_broadcast_backward(const Tensor& dy, Tensor& dv) override;
  void scale_forward(const Tensor& x, Tensor& y, float s) override;
  void concat_channels_forward(const Tensor& a, const Tensor& b, Tensor& y) override;
  void concat_channels_backward(const Tensor& dy, Tensor* da, Tensor* db) override;
  void upsample_nearest2x_forward(const Tensor& x, Tensor& y) override;
  void upsample_nearest2x_backward(const Tensor& dy, Tensor& dx) override;
  void timestep_embedding_forward(const Tensor& t, Tensor& y, const TimestepEmbeddingParams& p) override;
  void embedding_forward(const Tensor& ids, const Tensor& table, Tensor& y) override;
  void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) override;

  // ---- the training step (cuda_ops.cpp) ----
  void mse_loss_forward_backward(const Tensor& pred, const Tensor& target,
                                 const std::vector<double>& grad_weight, Tensor& dpred,
                                 Tensor& sample_mse) override;
  void sum_of_squares(const Tensor& x, Tensor& out) override;
  void clip_and_check(const Tensor& sumsq, const Tensor& check, float max_norm, Tensor& coef) override;
  void adamw_step(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, Tensor* working,
                  const AdamWStep& p, const Tensor& coef) override;

  cudaStream_t stream() const { return stream_; }
  int device_index() const { return device_; }

 private:
  // A device tensor of this backend (defined, on the GPU); `what` names the op and argument in errors.
  // Also makes this backend's device current.
  void expect(const Tensor& t, const char* what) const;
  std::shared_ptr<void> scratch(size_t bytes) { return alloc_->scratch(bytes); }
  void run_conv_forward(const Tensor& x, const Tensor& w, Tensor& y, const Conv2dGeometry& g);

  int device_;
  DType act_ = DType::BF16;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<DeviceAllocator> alloc_;
  std::unique_ptr<Gemm> gemm_;
  std::unique_ptr<Conv> conv_;
  std::unique_ptr<PinnedStaging> staging_;
  cudaEvent_t reached_ = nullptr;  // "this stream got here": cross-device ordering (copy_from)
  int* bad_id_ = nullptr;  // device int: embedding_forward's out-of-range id (+1), checked at synchronize()
};

}  // namespace db::cuda
