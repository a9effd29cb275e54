#include "dreambooth/dist/world.h"

#include <mpi.h>

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"

namespace db {
namespace {
World g_world;
bool g_init = false;
double g_timeout = 0;
constexpr int kProbeTag = 0x7db0;

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(what, ": ", std::string(msg, size_t(len)));
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void sleep_us(long us) {
  timespec ts{us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, nullptr);  // a signal may cut it short: the caller polls again
}

// The ranks that are not waiting with us: every waiting rank sends a probe to every other one and
// listens for theirs during a grace period; the silent ones did not arrive.
std::vector<int> missing_ranks(double grace_s) {
  const int n = g_world.size;
  // Static: the caller throws and aborts with these requests pending, so the buffers must outlive us.
  static std::vector<int> probe, got;
  probe.assign(size_t(n), g_world.rank);
  got.assign(size_t(n), -1);
  std::vector<MPI_Request> sends, recvs(size_t(n), MPI_REQUEST_NULL);
  for (int r = 0; r < n; ++r) {
    if (r == g_world.rank) continue;
    sends.emplace_back();
    MPI_Isend(&probe[size_t(r)], 1, MPI_INT, r, kProbeTag, MPI_COMM_WORLD, &sends.back());
    MPI_Irecv(&got[size_t(r)], 1, MPI_INT, r, kProbeTag, MPI_COMM_WORLD, &recvs[size_t(r)]);
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<int> missing;
  for (;;) {
    missing.clear();
    for (int r = 0; r < n; ++r) {
      if (r == g_world.rank) continue;
      int done = 0;
      if (recvs[size_t(r)] != MPI_REQUEST_NULL) MPI_Test(&recvs[size_t(r)], &done, MPI_STATUS_IGNORE);
      if (recvs[size_t(r)] != MPI_REQUEST_NULL) missing.push_back(r);
    }
    if (missing.empty() || seconds_since(t0) > grace_s) return missing;  // requests left pending: we abort
    sleep_us(10000);
  }
}

// Completes `req` or throws after the collective timeout (see world.h).
void wait_or_timeout(MPI_Request* req, const char* what) {
  const auto t0 = std::chrono::steady_clock::now();
  long pause_us = 0;
  for (;;) {
    int done = 0;
    check_mpi(MPI_Test(req, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    const double waited = seconds_since(t0);
    if (waited > g_timeout) break;
    if (waited > 0.02) {
      pause_us = std::clamp(pause_us * 2, 50L, 1000L);
      sleep_us(pause_us);
    }
  }
  const double grace = std::clamp(g_timeout / 10, 1.0, 10.0);
  const std::vector<int> missing = missing_ranks(grace);
  std::string who;
  for (int r : missing) who += (who.empty() ? "" : ", ") + std::to_string(r);
  if (missing.empty())
    throw Error(what, " did not complete within ", g_timeout,
                " s (--collective-timeout), though every rank is waiting: are the ranks issuing different "
                "collectives?");
  throw Error(what, " did not complete within ", g_timeout, " s (--collective-timeout): rank(s) ", who,
              " did not arrive (stopped, hung, or slower than the timeout)");
}

// Test hook (tests/mpi/collective_timeout_shard.sh): DREAMBOOTH_STALL_AT=RANK:NAME stops that rank
// (SIGSTOP) when it enters its first collective NAME (e.g. 1:MPI_Reduce_scatter), so a peer waits there.
void stall_if_asked(const char* what) {
  static const std::string at = [] {
    const char* e = std::getenv("DREAMBOOTH_STALL_AT");
    return std::string(e ? e : "");
  }();
  if (!at.empty() && at == std::to_string(g_world.rank) + ":" + what) raise(SIGSTOP);
}

// A collective: blocking without a timeout, else started non-blocking and polled.
template <typename Blocking, typename NonBlocking>
void collective(const char* what, Blocking blocking, NonBlocking start) {
  stall_if_asked(what);
  if (g_timeout <= 0) {
    check_mpi(blocking(), what);
    return;
  }
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(start(&req), what);
  wait_or_timeout(&req, what);
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

void set_collective_timeout(double seconds) {
  g_timeout = seconds > 0 ? seconds : 0;
}

double collective_timeout() {
  return g_timeout;
}

void barrier() {
  if (!g_init || g_world.size == 1) return;
  collective(
      "MPI_Barrier", [] { return MPI_Barrier(MPI_COMM_WORLD); },
      [](MPI_Request* r) { return MPI_Ibarrier(MPI_COMM_WORLD, r); });
}

namespace {
void allreduce(void* data, int cnt, MPI_Datatype type, MPI_Op op) {
  collective(
      "MPI_Allreduce", [&] { return MPI_Allreduce(MPI_IN_PLACE, data, cnt, type, op, MPI_COMM_WORLD); },
      [&](MPI_Request* r) { return MPI_Iallreduce(MPI_IN_PLACE, data, cnt, type, op, MPI_COMM_WORLD, r); });
}
}  // namespace

void allreduce_sum(float* data, size_t n) {
  if (!g_init || g_world.size == 1) return;
  chunked(n, [&](size_t off, int cnt) { allreduce(data + off, cnt, MPI_FLOAT, MPI_SUM); });
}

void allreduce_sum(double* data, size_t n) {
  if (!g_init || g_world.size == 1) return;
  chunked(n, [&](size_t off, int cnt) { allreduce(data + off, cnt, MPI_DOUBLE, MPI_SUM); });
}

int64_t allreduce_sum(int64_t v) {
  if (!g_init || g_world.size == 1) return v;
  allreduce(&v, 1, MPI_INT64_T, MPI_SUM);
  return v;
}

int64_t allreduce_max(int64_t v) {
  if (!g_init || g_world.size == 1) return v;
  allreduce(&v, 1, MPI_INT64_T, MPI_MAX);
  return v;
}

void broadcast(void* data, size_t bytes, int root) {
  if (!g_init || g_world.size == 1) return;
  chunked(bytes, [&](size_t off, int cnt) {
    char* p = static_cast<char*>(data) + off;
    collective(
        "MPI_Bcast", [&] { return MPI_Bcast(p, cnt, MPI_BYTE, root, MPI_COMM_WORLD); },
        [&](MPI_Request* r) { return MPI_Ibcast(p, cnt, MPI_BYTE, root, MPI_COMM_WORLD, r); });
  });
}

void reduce_scatter_sum(const float* send, float* recv, const int* counts) {
  if (!g_init || g_world.size == 1) return;
  collective(
      "MPI_Reduce_scatter",
      [&] { return MPI_Reduce_scatter(send, recv, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); },
      [&](MPI_Request* r) {
        return MPI_Ireduce_scatter(send, recv, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, r);
      });
}

void all_gather_bytes(void* data, const int* counts, const int* displs) {
  if (!g_init || g_world.size == 1) return;
  collective(
      "MPI_Allgatherv",
      [&] {
        return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts, displs, MPI_BYTE,
                              MPI_COMM_WORLD);
      },
      [&](MPI_Request* r) {
        return MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts, displs, MPI_BYTE,
                               MPI_COMM_WORLD, r);
      });
}

bool any_rank(bool flag) {
  return allreduce_max(flag ? 1 : 0) != 0;
}

}  // namespace db
