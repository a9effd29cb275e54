// The MPI Communicator: MPI_Allreduce over MPI_COMM_WORLD. Host (CPU backend) tensors are reduced in
// place; tensors in device memory are downloaded, reduced and uploaded again (a GPU run uses NCCL).
#include <mpi.h>

#include <climits>
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
  static void reduce(void* data, int64_t n, DType dtype) {
    const MPI_Datatype type = dtype == DType::F32 ? MPI_FLOAT : MPI_DOUBLE;
    const size_t esize = dtype_size(dtype);
    const int64_t kMax = INT_MAX / 2;  // MPI counts are int: large buffers go in chunks
    for (int64_t off = 0; off < n; off += kMax) {
      const int cnt = int(std::min(kMax, n - off));
      const int rc = MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(data) + size_t(off) * esize, cnt, type,
                                   MPI_SUM, MPI_COMM_WORLD);
      DB_CHECK(rc == MPI_SUCCESS, "MPI_Allreduce failed (code ", rc, ")");
    }
  }

  Ops& ops_;
  const World& world_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(Ops& ops) {
  return std::make_unique<MpiCommunicator>(ops);
}

}  // namespace db
