#pragma once
// The MPI world every subcommand runs in (DESIGN.md: "every subcommand runs the same with or without
// mpirun"). A plain `dreambooth ...` is an MPI singleton (world size 1); under mpirun or
// `srun --mpi=pmix` each process is one rank.
//
// Failure policy (decision 9): a rank that fails prints its own message once, then calls MPI_Abort,
// which ends every rank with a non-zero exit promptly instead of leaving them waiting in a collective.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace db {

struct World {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // within this node (shared-memory split)
  bool is_root() const { return rank == 0; }
};

// Initialises MPI once (thread level FUNNELED) and sets the log prefix. Safe to call repeatedly.
const World& init_world(int* argc, char*** argv);
const World& world();  // after init_world (or a size-1 world when MPI was never initialised)
bool world_initialised();
void finalize_world();
[[noreturn]] void abort_world(int code);

// Collective timeout (train --collective-timeout): with seconds > 0 every collective below (and so
// every collective of the MPI Communicator) is started non-blocking and polled with MPI_Test, spinning for
// the first 20 ms and then sleeping between polls (50 us doubling to 1 ms) instead of the 100% CPU spin of a
// blocking call; when it has not completed after `seconds`, the waiting ranks exchange a probe message
// for a short grace period (1-10 s) to learn which ranks are not waiting with them, and throw an
// Error naming them ("rank(s) 1 did not arrive") or, when every rank answered, the collective.
// 0 (the default outside `train`): plain blocking calls, no limit.
void set_collective_timeout(double seconds);
double collective_timeout();

// Collectives over MPI_COMM_WORLD (no-ops on a size-1 world).
void barrier();
void allreduce_sum(float* data, size_t n);
void allreduce_sum(double* data, size_t n);
int64_t allreduce_sum(int64_t v);
int64_t allreduce_max(int64_t v);
void broadcast(void* data, size_t bytes, int root = 0);
// MPI_Reduce_scatter of f32 (counts[r] elements to rank r; recv holds this rank's summed part) and an
// in-place MPI_Allgatherv of bytes (rank r's counts[r] bytes at displs[r] of data): the Communicator's
// sharded collectives, under the collective timeout like the rest. Every rank passes the same counts.
void reduce_scatter_sum(const float* send, float* recv, const int* counts);
void all_gather_bytes(void* data, const int* counts, const int* displs);
// Everyone learns whether anyone failed, so ranks can stop together at a step boundary.
bool any_rank(bool flag);

}  // namespace db
