// bench_allreduce: the gradient reduction's cost per bucket size, over the job's Communicator (MPI;
// NCCL when built with CUDA=1 and run with --device cuda on GPUs). Run under mpirun / srun:
//
//   mpirun -np 2 build/bench_allreduce [--device cpu|cuda|auto] [--total-mb 128] [--reps 5]
//                                      [--buckets 1,4,16,25,64] [--json FILE]
//
// 1. One all-reduce per message size (powers of 4 from 64 KiB up to --total-mb): time, algorithm
//    bandwidth (bytes / time) and bus bandwidth (x 2 (N-1) / N, NCCL's convention: what each link
//    carries in a ring, comparable across world sizes).
// 2. A whole gradient of --total-mb f32 reduced in buckets of each --buckets size, as GradientReducer
//    issues them (back to back here: no backward to overlap with, so this is the exposed cost when
//    nothing overlaps), plus the sharded path (reduce-scatter of every bucket, then one all-gather of
//    the whole buffer: --shard-optimizer).
// Each figure is the median over --reps of the slowest rank's time, after one warm-up.
#include <algorithm>
#include <chrono>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dreambooth/backend/device.h"
#include "dreambooth/core/error.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/shard.h"
#include "dreambooth/dist/world.h"

using namespace db;

namespace {

struct Options {
  std::string device = "auto", json;
  double total_mb = 128;
  int reps = 5;
  std::vector<double> buckets = {1, 4, 16, 25, 64};
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      DB_CHECK(i + 1 < argc, "bench_allreduce: ", k, " needs a value");
      return argv[++i];
    };
    if (k == "--device") {
      o.device = value();
    } else if (k == "--total-mb") {
      o.total_mb = std::stod(value());
    } else if (k == "--reps") {
      o.reps = std::max(1, std::stoi(value()));
    } else if (k == "--json") {
      o.json = value();
    } else if (k == "--buckets") {
      o.buckets.clear();
      std::stringstream ss(value());
      for (std::string b; std::getline(ss, b, ',');) o.buckets.push_back(std::stod(b));
    } else {
      throw Error("bench_allreduce: unknown option ", k,
                  " (see the comment at the top of bench/allreduce.cpp)");
    }
  }
  DB_CHECK(o.total_mb > 0 && !o.buckets.empty(), "bench_allreduce: --total-mb and --buckets must be > 0");
  return o;
}

double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Median over reps of the slowest rank's seconds for f() (all ranks call it; one warm-up).
template <typename F>
double timed(Ops& ops, int reps, F f) {
  f();
  ops.synchronize();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    barrier();
    const double t0 = now();
    f();
    ops.synchronize();  // an asynchronous communicator (NCCL) has only queued the work
    const int64_t ns = allreduce_max(int64_t((now() - t0) * 1e9));
    t.push_back(double(ns) * 1e-9);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// The collectives compute what they promise (so a GPU run of this bench also checks the NCCL
// Communicator): rank r contributes r + 1 everywhere; a reduced element is N (N + 1) / 2.
void verify(Ops& ops, Communicator& comm, int64_t n) {
  const int N = comm.size(), r = comm.rank();
  const float want = float(N) * float(N + 1) / 2;
  const ShardLayout shard(n, N);
  std::vector<float> host(static_cast<size_t>(n));
  Tensor t = ops.empty({n}, DType::F32);
  auto check = [&](const char* what, int64_t lo, int64_t hi, auto expect) {
    ops.download(t, host.data());
    ops.synchronize();
    for (int64_t i = lo; i < hi; ++i)
      DB_CHECK(host[size_t(i)] == expect(i), "bench_allreduce: ", what, " wrong at ", i, " on rank ", r, ": ",
               host[size_t(i)], " instead of ", expect(i));
  };
  ops.fill(t, float(r + 1));
  comm.allreduce_sum(t);
  check("allreduce_sum", 0, n, [&](int64_t) { return want; });
  ops.fill(t, float(r + 1));
  comm.reduce_scatter_sum(t, shard.counts());
  check("reduce_scatter_sum", shard.begin(r), shard.end(r), [&](int64_t) { return want; });
  for (int q = 0; q < N; ++q) {  // rank q's part holds q + 1 on rank q only
    Tensor part = t.slice(shard.begin(q), shard.end(q));
    if (q == r && part.numel() > 0) ops.fill(part, float(q + 1));
  }
  comm.all_gather(t, shard.counts());
  check("all_gather", 0, n, [&](int64_t i) {
    int q = 0;
    while (i >= shard.end(q)) ++q;
    return float(q + 1);
  });
}

}  // namespace

int main(int argc, char** argv) try {
  const World& w = init_world(&argc, &argv);
  const Options o = parse(argc, argv);
  const std::unique_ptr<Ops> ops = make_ops(o.device);
  const CudaBackend* cb = linked_cuda_backend ? linked_cuda_backend() : nullptr;
  const bool gpu = ops->device() == Device::CUDA && cb && !cb->emulated;
  const std::unique_ptr<Communicator> comm = make_communicator(*ops, gpu);
  verify(*ops, *comm, 100003);
  const int64_t total = int64_t(o.total_mb * (1 << 20)) / 4;  // f32 elements
  Tensor buf = ops->empty({total}, DType::F32);
  ops->fill(buf, 1.f / float(w.size));
  const double bus = w.size > 1 ? 2.0 * (w.size - 1) / w.size : 1.0;
  nlohmann::json out = {
      {"ranks", w.size}, {"backend", ops->name()}, {"communicator", comm->name()}, {"total_mb", o.total_mb}};
  if (w.is_root()) {
    std::printf(
        "bench_allreduce: %d rank(s), backend %s, communicator %s (collectives verified), f32, median of %d "
        "(slowest rank)\n",
        w.size, ops->name(), comm->name(), o.reps);
    if (w.size == 1 && std::string(comm->name()) == "mpi")
      std::printf("one rank over MPI: every collective returns at once (nothing to measure)\n");
    std::printf("%12s %12s %14s %14s\n", "size", "time ms", "algbw GB/s", "busbw GB/s");
  }
  for (int64_t n = 16384; n <= total; n *= 4) {
    Tensor t = buf.slice(0, n);
    const double s = timed(*ops, o.reps, [&] { comm->allreduce_sum(t); });
    const double bytes = double(n) * 4, alg = bytes / s / 1e9;
    if (w.is_root())
      std::printf("%9.2f MiB %12.3f %14.2f %14.2f\n", bytes / (1 << 20), s * 1e3, alg, alg * bus);
    out["allreduce"].push_back(
        {{"mib", bytes / (1 << 20)}, {"seconds", s}, {"algbw_gbs", alg}, {"busbw_gbs", alg * bus}});
  }
  const ShardLayout shard(total, w.size);
  if (w.is_root())
    std::printf("\n%.0f MiB of gradients in buckets:\n%12s %10s %16s %22s\n", o.total_mb, "bucket", "buckets",
                "all-reduce ms", "reduce-scatter+gather ms");
  for (const double mb : o.buckets) {
    const int64_t per = std::max<int64_t>(1, int64_t(mb * (1 << 20)) / 4);
    const int64_t count = (total + per - 1) / per;
    auto each = [&](auto f) {
      for (int64_t b = 0; b < total; b += per) {
        Tensor t = buf.slice(b, std::min(total, b + per));
        f(t, b);
      }
    };
    const double ar = timed(*ops, o.reps, [&] { each([&](Tensor& t, int64_t) { comm->allreduce_sum(t); }); });
    const double rs = timed(*ops, o.reps, [&] {
      each([&](Tensor& t, int64_t b) { comm->reduce_scatter_sum(t, shard.counts_in(b, b + t.numel())); });
      comm->all_gather(buf, shard.counts());
    });
    if (w.is_root())
      std::printf("%8.2f MiB %10lld %16.3f %22.3f\n", mb, (long long)count, ar * 1e3, rs * 1e3);
    out["bucketed"].push_back(
        {{"bucket_mib", mb}, {"buckets", count}, {"allreduce_s", ar}, {"reduce_scatter_all_gather_s", rs}});
  }
  if (w.is_root() && !o.json.empty()) std::ofstream(o.json) << out.dump() << "\n";
  finalize_world();
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_allreduce: %s\n", e.what());
  db::abort_world(1);
}
