#pragma once
// Communicator: collectives over the ranks of a job on backend tensors (DESIGN.md decision 15). The
// MPI implementation works on any backend (host memory directly; device memory staged through the
// host); the NCCL implementation (CUDA builds, nccl_communicator.cpp) reduces device memory on its own
// stream. Every rank must issue the same collectives in the same order.
#include <cstdint>
#include <memory>
#include <vector>

#include "dreambooth/backend/ops.h"

namespace db {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;  // "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: t = sum of t over the ranks (F32 or F64), after every op issued so far on the backend.
  // Returns when t holds the sum.
  virtual void allreduce_sum(Tensor& t) = 0;
  // Flat t (F32) is split into consecutive parts, counts[r] elements for rank r (sum = t.numel(), zero
  // counts allowed). In place: this rank's part becomes the sum of that part over the ranks; the rest
  // of t is left unspecified. ZeRO-1's gradient reduction (--shard-optimizer).
  virtual void reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) = 0;
  // Flat t (any dtype), parts as above: in place, every rank receives every rank's part.
  virtual void all_gather(Tensor& t, const std::vector<int64_t>& counts) = 0;

  // Issued (GradientReducer's buckets): the same collectives, ordered after every op issued so far on
  // the backend, but the backend's later ops are NOT ordered after them: nothing the backend runs may
  // read or write t until wait_issued(), which orders the backend's next ops after every collective
  // issued so far. On the NCCL communicator this is what lets a bucket's reduction overlap the rest of
  // backward; the MPI communicator blocks, so t already holds the result on return (the defaults).
  virtual void issue_allreduce_sum(Tensor& t) { allreduce_sum(t); }
  virtual void issue_reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) {
    reduce_scatter_sum(t, counts);
  }
  virtual void wait_issued() {}
};

// MPI_COMM_WORLD (dist/world.h must be initialised); `ops` is the backend whose tensors it reduces.
std::unique_ptr<Communicator> make_mpi_communicator(Ops& ops);

// NCCL over the world's ranks on the CUDA backend `ops` (one device per rank); null when this binary
// has no NCCL (weak hook: defined by src/dist/nccl_communicator.cpp, linked into CUDA=1 builds only).
std::unique_ptr<Communicator> make_nccl_communicator(Ops& ops) __attribute__((weak));

// The job's communicator: NCCL when `cuda_device` (the backend is a real, not emulated, CUDA device),
// the world has more than one rank and NCCL is linked, unless DREAMBOOTH_COMM=mpi; otherwise MPI.
// DREAMBOOTH_COMM=nccl makes a missing NCCL an error.
std::unique_ptr<Communicator> make_communicator(Ops& ops, bool cuda_device);

}  // namespace db
