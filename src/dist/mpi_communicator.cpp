// The MPI Communicator: collectives over MPI_COMM_WORLD. Host (CPU backend) tensors are reduced in
// place; tensors in device memory are downloaded, reduced and uploaded again (a GPU run uses NCCL).
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/dist/communicator.h"
#include "dreambooth/dist/world.h"

namespace db {
namespace {

// MPI counts are int: a buffer goes in windows of at most window() elements, each with its own counts
// (a rank's part clipped to the window). Every rank cuts the same windows. DREAMBOOTH_MPI_WINDOW (a test
// hook, tests/mpi/shard_optimizer.sh) makes them small enough for a tiny model to cross them.
int64_t window() {
  static const int64_t w = [] {
    const char* e = std::getenv("DREAMBOOTH_MPI_WINDOW");
    const int64_t v = e ? std::atoll(e) : 0;
    return v > 0 ? std::min<int64_t>(v, INT_MAX / 16) : int64_t(INT_MAX / 16);
  }();
  return w;
}

template <typename F>
void windows(const std::vector<int64_t>& counts, F f) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  for (int64_t w0 = 0; w0 < n; w0 += window()) {
    const int64_t w1 = std::min(n, w0 + window());
    std::vector<int> cnt, displ;
    int64_t begin = 0;
    for (int64_t c : counts) {
      const int64_t lo = std::max(begin, w0), hi = std::min(begin + c, w1);
      displ.push_back(int(std::max<int64_t>(0, lo - w0)));
      cnt.push_back(int(std::max<int64_t>(0, hi - lo)));
      begin += c;
    }
    f(w0, w1, cnt, displ);
  }
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(Ops& ops) : ops_(ops), world_(world()) {}
  const char* name() const override { return "mpi"; }
  int rank() const override { return world_.rank; }
  int size() const override { return world_.size; }

  void allreduce_sum(Tensor& t) override {
    if (world_.size == 1) return;
    DB_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::F64, "allreduce: ", t.desc(),
             " (only f32 and f64 are reduced)");
    staged(t, [&](char* data) { reduce(data, t.numel(), t.dtype()); });
  }

  void reduce_scatter_sum(Tensor& t, const std::vector<int64_t>& counts) override {
    check_parts("reduce_scatter", t, counts);
    DB_CHECK(t.dtype() == DType::F32, "reduce_scatter: ", t.desc(), " (only f32 is reduced)");
    if (world_.size == 1) return;
    int64_t own = 0;
    for (int r = 0; r < world_.rank; ++r) own += counts[size_t(r)];
    std::vector<float> recv;
    auto run = [&](char* data) {
      float* f = reinterpret_cast<float*>(data);
      windows(counts, [&](int64_t w0, int64_t, const std::vector<int>& cnt, const std::vector<int>& displ) {
        recv.resize(size_t(std::max(1, cnt[size_t(world_.rank)])));
        db::reduce_scatter_sum(f + w0, recv.data(), cnt.data());
        std::memcpy(f + w0 + displ[size_t(world_.rank)], recv.data(), size_t(cnt[size_t(world_.rank)]) * 4);
      });
    };
    staged(t, run, own, own + counts[size_t(world_.rank)]);  // only this rank's part goes back
  }

  void all_gather(Tensor& t, const std::vector<int64_t>& counts) override {
    check_parts("all_gather", t, counts);
    if (world_.size == 1) return;
    const size_t es = dtype_size(t.dtype());
    staged(t, [&](char* data) {
      windows(counts, [&](int64_t w0, int64_t, const std::vector<int>& cnt, const std::vector<int>& displ) {
        std::vector<int> bc(cnt.size()), bd(cnt.size());
        for (size_t r = 0; r < cnt.size(); ++r) bc[r] = int(cnt[r] * es), bd[r] = int(displ[r] * es);
        all_gather_bytes(data + size_t(w0) * es, bc.data(), bd.data());
      });
    });
  }

 private:
  void check_parts(const char* what, const Tensor& t, const std::vector<int64_t>& counts) const {
    int64_t n = 0;
    for (int64_t c : counts) n += c;
    DB_CHECK(int(counts.size()) == world_.size && n == t.numel(), what, ": ", counts.size(), " parts of ", n,
             " elements for ", t.desc(), " over ", world_.size, " ranks");
  }

  // f(host bytes of t): t itself on the CPU backend, else a host copy whose elements [first, last)
  // (default: all) are uploaded back.
  template <typename F>
  void staged(Tensor& t, F f, int64_t first = 0, int64_t last = -1) {
    if (t.device() == Device::CPU) {
      ops_.synchronize();
      f(static_cast<char*>(t.raw()));
      return;
    }
    std::vector<char> host(t.nbytes());
    ops_.download(t, host.data());
    ops_.synchronize();
    f(host.data());
    if (last < 0) last = t.numel();
    Tensor back = t.view({t.numel()}).slice(first, last);
    if (back.numel() > 0) ops_.upload(host.data() + size_t(first) * dtype_size(t.dtype()), back);
    ops_.synchronize();  // `host` is released on return
  }

  // Through dist/world.h (as the sharded collectives above): chunked, bounded by the collective timeout.
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

std::unique_ptr<Communicator> make_communicator(Ops& ops, bool cuda_device) {
  const char* env = std::getenv("DREAMBOOTH_COMM");
  const std::string want = env ? env : "";
  DB_CHECK(want.empty() || want == "mpi" || want == "nccl", "DREAMBOOTH_COMM=", want,
           ": expected mpi or nccl");
  const bool nccl_linked = make_nccl_communicator != nullptr;
  if (want == "nccl") {
    DB_CHECK(nccl_linked && cuda_device, "DREAMBOOTH_COMM=nccl: ",
             nccl_linked ? "the backend is not a CUDA device"
                         : "this binary has no NCCL (a CUDA=1 build links it)");
    return make_nccl_communicator(ops);
  }
  if (want.empty() && nccl_linked && cuda_device && world().size > 1) return make_nccl_communicator(ops);
  return make_mpi_communicator(ops);
}

}  // namespace db
