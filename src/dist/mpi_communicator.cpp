// The MPI Communicator: MPI_Allreduce over MPI_COMM_WORLD. Host (CPU backend) tensors are reduced in
// place; tensors in device memory are downloaded, reduced and uploaded again (a GPU run uses NCCL).
#include <mpi.h>

#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/world.h"

namespace db {
namespace {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(Ops& ops) : ops_(ops), world_(world()) {}
  int rank() const override { return world_.rank; }
  int size() const override { return world_.size; }

  void allreduce_sum(Tensor& t) override {
    if (world_.size == 1) return;
    DB_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "allreduce: ", t.desc(),
             " (only f32 and f64 are reduced)");
    if (t.device() == Device::CPU) {
      ops_.synchronize();
      reduce(t.raw(), t.numel(), t.dtype());
      return;
    }
    std::vector<char> host(t.nbytes());
    ops_.download(t, host.data());
    ops_.synchronize();
    reduce(host.data(), t.numel(), t.dtype());
    ops_.upload(host.data(), t);
    ops_.synchronize();  // `host` is released on return
  }

 private:
  // Through dist/world.h: chunked, and bounded by the collective timeout.
  static void reduce(void* data, int64_t n, DType dtype) {
    if (dtype == DType::F32)
      db::allreduce_sum(static_cast<float*>(data), size_t(n));
    else
      db::allreduce_sum(static_cast<double*>(data), size_t(n));
  }

  Ops& ops_;
  const World& world_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(Ops& ops) {
  return std::make_unique<MpiCommunicator>(ops);
}

}  // namespace db
