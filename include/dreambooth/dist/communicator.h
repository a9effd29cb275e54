#pragma once
// Communicator: collectives over the ranks of a job on backend tensors (DESIGN.md decision 15). The
// MPI implementation works on any backend (host memory directly; device memory staged through the
// host); an NCCL implementation reduces device memory on its own stream. Every rank must issue the
// same collectives in the same order.
#include <memory>

#include "dreambooth/backend/ops.h"

namespace db {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place: t = sum of t over the ranks (F32 or F64), after every op issued so far on the backend.
  // Returns when t holds the sum.
  virtual void allreduce_sum(Tensor& t) = 0;
};

// MPI_COMM_WORLD (dist/world.h must be initialised); `ops` is the backend whose tensors it reduces.
std::unique_ptr<Communicator> make_mpi_communicator(Ops& ops);

}  // namespace db
