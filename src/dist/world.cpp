#include "dreambooth/dist/world.h"

#include <mpi.h>

#include <climits>
#include <cstdlib>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"

namespace db {
namespace {
World g_world;
bool g_init = false;

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(what, ": ", std::string(msg, size_t(len)));
  }
}

// MPI counts are int: large buffers go in chunks.
template <typename F>
void chunked(size_t n, F f) {
  const size_t kMax = size_t(INT_MAX) / 2;
  for (size_t off = 0; off < n; off += kMax) f(off, int(std::min(kMax, n - off)));
}
}  // namespace

const World& init_world(int* argc, char*** argv) {
  if (g_init) return g_world;
  int already = 0;
  MPI_Initialized(&already);
  if (!already) {
    int provided = 0;
    check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g_world.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world.size);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_world.rank, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &g_world.local_rank);
  MPI_Comm_size(local, &g_world.local_size);
  MPI_Comm_free(&local);
  g_init = true;
  set_log_rank(g_world.rank, g_world.size);
  return g_world;
}

const World& world() {
  return g_world;
}
bool world_initialised() {
  return g_init;
}

void finalize_world() {
  if (!g_init) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
  g_init = false;
}

void abort_world(int code) {
  if (g_init && g_world.size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

void barrier() {
  if (g_init && g_world.size > 1) check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
}

void allreduce_sum(float* data, size_t n) {
  if (!g_init || g_world.size == 1) return;
  chunked(n, [&](size_t off, int cnt) {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + off, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
  });
}

void allreduce_sum(double* data, size_t n) {
  if (!g_init || g_world.size == 1) return;
  chunked(n, [&](size_t off, int cnt) {
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + off, cnt, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
              "MPI_Allreduce");
  });
}

int64_t allreduce_sum(int64_t v) {
  if (!g_init || g_world.size == 1) return v;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
  return v;
}

int64_t allreduce_max(int64_t v) {
  if (!g_init || g_world.size == 1) return v;
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
  return v;
}

void broadcast(void* data, size_t bytes, int root) {
  if (!g_init || g_world.size == 1) return;
  chunked(bytes, [&](size_t off, int cnt) {
    check_mpi(MPI_Bcast(static_cast<char*>(data) + off, cnt, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
  });
}

bool any_rank(bool flag) {
  return allreduce_max(flag ? 1 : 0) != 0;
}

}  // namespace db
