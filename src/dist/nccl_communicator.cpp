// The NCCL Communicator (CUDA=1 builds only; see the Makefile's NCCL_SRCS): collectives on device
// memory over the world's ranks, one GPU per rank. UNVERIFIED: compiled and linked in CI, never run on
// a GPU yet (docs/ARCHITECTURE.md, "Distributed runs").
//
// Ordering: the collectives run on their own stream. Before each one an event recorded on the compute
// stream makes the NCCL stream wait for every op issued so far (the data it reduces is final). The
// synchronous collectives then record an event on the NCCL stream that the compute stream waits on
// before its next op. The issued ones (issue_*: GradientReducer's buckets) do not: the compute stream
// runs on with the rest of backward while the bucket is reduced, and waits once, in wait_issued(),
// which GradientReducer::finish calls before it scales the gradients. The host never waits.
// Why the compute stream does not touch an issued bucket before wait_issued(): a bucket holds the
// gradients of blocks that backward announced as final (Ctx::grads_ready: no later op of the step
// accumulates into them), only the last micro-batch announces, and the next writers (the averaging
// scale, the norm, AdamW, zero_grads) run after finish().
//
// Variable counts (ZeRO-1 shards are not equal over a bucket): reduce_scatter is one ncclReduce per
// rank to that rank (root), all_gather one ncclBroadcast per rank from it, each set in one NCCL group.
// Reduction dtype f32 (ARCHITECTURE.md explains why not bf16). Host tensors (checkpoints' moments) go
// through the MPI Communicator.
//
// One device per communicator: with a GPU pair per rank (train --gpus-per-rank 2) the trainer makes one
// communicator per lane (the ranks' first GPUs for the UNet, their second GPUs for the text encoder),
// each bound to its backend's device (made current at creation and before every collective).
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "../backend/cuda/cuda_check.h"
#include "../backend/cuda/cuda_ops.h"
#include "../backend/cuda/current_device.h"
#include "dreambooth/core/error.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/world.h"

namespace db {
namespace {

void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw Error("NCCL: ", what, ": ", ncclGetErrorString(r));
}
#define DB_NCCL(call) check_nccl((call), #call)

class NcclCommunicator final : public Communicator {
 public:
  explicit NcclCommunicator(Ops& ops)
      : cuda_(dynamic_cast<cuda::CudaOps*>(&ops)), host_(make_mpi_communicator(ops)), world_(world()) {
    DB_CHECK(cuda_, "NCCL communicator: the backend is ", ops.name(), ", not CUDA");
    cuda::use_device(cuda_->device_index());  // the stream, events and communicator belong to it
    ncclUniqueId id{};
    if (world_.rank == 0) DB_NCCL(ncclGetUniqueId(&id));
    broadcast(&id, sizeof id, 0);
    DB_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DB_CUDA(cudaEventCreateWithFlags(&issued_, cudaEventDisableTiming));
    DB_CUDA(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
    DB_NCCL(ncclCommInitRank(&comm_, world_.size, id, world_.rank));
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
    if (reduced_) cudaEventDestroy(reduced_);
    if (issued_) cudaEventDestroy(issued_);
    if (stream_) cudaStreamDestroy(stream_);
  }
  const char* name() const override { return "nccl"; }
  int rank() const override { return world_.rank; }
  int size() const override { return world_.size; }

  void allreduce_sum(Tensor& t) override {
    if (t.device() == Device::CPU) return host_->allreduce_sum(t);
    issue_allreduce_sum(t);
    wait_issued();
  }

  void issue_allreduce_sum(Tensor& t) override {
    if (t.device() == Device::CPU) return host_->allreduce_sum(t);
    DB_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "allreduce: ", t.desc(),
             " (only f32 and f64 are reduced)");
    after_compute();
    DB_NCCL(ncclAllReduce(t.raw(), t.raw(), size_t(t.numel()),
                          t.dtype() == DType::F32 ? ncclFloat32 : ncclFloat64, ncclSum, comm_, stream_));
  }

  void reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) override {
    if (t.device() == Device::CPU) return host_->reduce_scatter_sum(t, counts);
    issue_reduce_scatter_sum(t, counts);
    wait_issued();
  }

  void issue_reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) override {
    if (t.device() == Device::CPU) return host_->reduce_scatter_sum(t, counts);
    DB_CHECK(t.dtype() == DType::F32 && int(counts.size()) == world_.size, "reduce_scatter: ", t.desc(), ", ",
             counts.size(), " parts");
    after_compute();
    char* base = static_cast<char*>(t.raw());
    DB_NCCL(ncclGroupStart());
    for (int64_t r = 0, off = 0; r < world_.size; off += counts[size_t(r)], ++r)
      if (counts[size_t(r)] > 0)
        DB_NCCL(ncclReduce(base + size_t(off) * 4, base + size_t(off) * 4, size_t(counts[size_t(r)]),
                           ncclFloat32, ncclSum, int(r), comm_, stream_));
    DB_NCCL(ncclGroupEnd());
  }

  void all_gather(Tensor& t, const std::vector<int64_t>& counts) override {
    if (t.device() == Device::CPU) return host_->all_gather(t, counts);
    DB_CHECK(int(counts.size()) == world_.size, "all_gather: ", counts.size(), " parts");
    const size_t es = dtype_size(t.dtype());
    after_compute();
    char* base = static_cast<char*>(t.raw());
    DB_NCCL(ncclGroupStart());
    size_t off = 0;
    for (int r = 0; r < world_.size; ++r) {
      const size_t bytes = size_t(counts[size_t(r)]) * es;
      if (bytes > 0) DB_NCCL(ncclBroadcast(base + off, base + off, bytes, ncclUint8, r, comm_, stream_));
      off += bytes;
    }
    DB_NCCL(ncclGroupEnd());
    wait_issued();
  }

  // The compute stream's next ops wait for every collective issued so far (one stream: in order).
  void wait_issued() override {
    DB_CUDA(cudaEventRecord(reduced_, stream_));
    DB_CUDA(cudaStreamWaitEvent(cuda_->stream(), reduced_, 0));
  }

 private:
  void after_compute() {
    cuda::use_device(cuda_->device_index());
    DB_CUDA(cudaEventRecord(issued_, cuda_->stream()));
    DB_CUDA(cudaStreamWaitEvent(stream_, issued_, 0));
  }

  cuda::CudaOps* cuda_;
  std::unique_ptr<Communicator> host_;
  const World& world_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t issued_ = nullptr, reduced_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Ops& ops) {
  return std::make_unique<NcclCommunicator>(ops);
}

}  // namespace db
