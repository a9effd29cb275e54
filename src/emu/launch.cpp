// DB_LAUNCH under emulation: configuration checks (returned as the runtime's error codes), pointer
// argument checks, the grid run (block order per schedule; optionally on several workers), and the
// allocation guard check after the kernel.
#include "dreambooth/emu/launch.h"

#include <algorithm>
#include <atomic>
#include <numeric>

#include "allocations.h"
#include "block.h"
#include "host_waits_internal.h"
#include "dreambooth/emu/violation.h"
#include "runtime_state.h"
#include "worker_pool.h"

namespace db::emu::detail {
namespace {

// FNV-1a of the kernel's name and launch line.
uint64_t schedule_key(const LaunchSpec& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const char* c = s.kernel_name; *c; ++c) h = (h ^ uint8_t(*c)) * 0x100000001b3ull;
  return (h ^ s.site.line()) * 0x100000001b3ull;
}

std::string dims(const dim3& d) {
  return dim_string(uint3{d.x, d.y, d.z});
}

// "" when the configuration is one the runtime accepts, else why not (and the error code).
std::string check_configuration(const LaunchSpec& s, cudaError_t* error) {
  const dim3 b = s.block, g = s.grid;
  *error = cudaErrorInvalidConfiguration;
  if (b.x == 0 || b.y == 0 || b.z == 0 || g.x == 0 || g.y == 0 || g.z == 0)
    return "grid " + dims(g) + " / block " + dims(b) + " has a zero dimension";
  if (b.x > 1024 || b.y > 1024 || b.z > 64)
    return "block " + dims(b) + " exceeds the per-dimension limits (1024, 1024, 64)";
  if (uint64_t(b.x) * b.y * b.z > kMaxThreadsPerBlock)
    return "block " + dims(b) + " has " + std::to_string(uint64_t(b.x) * b.y * b.z) +
           " threads; at most 1024 per block";
  if (g.x > 0x7FFFFFFFu || g.y > 65535 || g.z > 65535)
    return "grid " + dims(g) + " exceeds the limits (2^31-1, 65535, 65535)";
  *error = cudaErrorInvalidValue;
  const size_t limit = max_dynamic_smem(s.kernel);
  if (s.dynamic_smem > limit)
    return "dynamic shared memory of " + std::to_string(s.dynamic_smem) +
           " bytes exceeds the kernel's limit of " + std::to_string(limit) +
           " bytes (above 48 KiB needs cudaFuncSetAttribute(kernel, "
           "cudaFuncAttributeMaxDynamicSharedMemorySize, "
           "bytes), at most 227 KiB)";
  *error = cudaErrorInvalidResourceHandle;
  if (!valid_stream(s.stream)) return "the stream is not a live stream";
  if (stream_device(s.stream) != current_device())
    return "the stream belongs to device " + std::to_string(stream_device(s.stream)) + " but device " +
           std::to_string(current_device()) + " is current (cudaSetDevice)";
  *error = cudaSuccess;
  return "";
}

// Block visiting order for one worker: forward, reverse, or a seeded permutation.
std::vector<uint32_t> block_order(const Launch& l, uint32_t n) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  if (l.options.workers > 1) return order;
  if (l.options.schedule == Schedule::Reverse) {
    std::reverse(order.begin(), order.end());
  } else if (l.options.schedule == Schedule::Random) {
    uint64_t s = (l.options.seed ^ l.schedule_key) | 1;  // xorshift needs a non-zero state
    for (uint32_t i = n; i > 1; --i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;  // xorshift64
      std::swap(order[i - 1], order[s % i]);
    }
  }
  return order;
}

[[noreturn]] void throw_violation(const std::string& check, const std::string& message) {
  set_error(cudaErrorLaunchFailure, message);
  throw Violation(check, message);
}

}  // namespace

cudaError_t run_launch(const LaunchSpec& spec, const PointerParam* pointers, int n_pointers,
                       KernelBody body) {
  const std::string where =
      "kernel " + kernel_name(spec.kernel_name) + " (launched at " + site_string(spec.site) + ")";
  // nvcc rejects DB_LAUNCH in device code (a host function); dynamic parallelism is not emulated.
  if (in_cuda_thread()) throw Error("DB_LAUNCH of ", where, " from inside a kernel: launches are host code");
  cudaError_t config_error = cudaSuccess;
  const std::string bad = check_configuration(spec, &config_error);
  if (!bad.empty()) {
    const char* check = config_error == cudaErrorInvalidValue ? "[smem-limit] " : "[launch-config] ";
    set_error(config_error, check + where + ": " + bad);
    set_last_error(cudaSuccess);  // DB_LAUNCH returns the error, as <<<>>> + cudaGetLastError() does
    return config_error;
  }
  for (int i = 0; i < n_pointers; ++i) {
    const void* p = pointers[i].value;
    if (!p) continue;
    const auto a = find_allocation(p);
    if (!a || a->kind == MemoryKind::PinnedHost)
      throw_violation("host-pointer",
                      "[host-pointer] " + where + ": argument " + std::to_string(pointers[i].index) +
                          " points to " + (a ? describe(*a) : std::string("host memory")) +
                          "; kernel pointer arguments must be null or inside a device or managed "
                          "allocation");
    if (a->kind == MemoryKind::Device && !peer_enabled(current_device(), a->device))
      throw_violation("peer-access", "[peer-access] " + where + " on device " +
                                         std::to_string(current_device()) + ": argument " +
                                         std::to_string(pointers[i].index) + " points to " + describe(*a) +
                                         " and peer access to it is not enabled "
                                         "(cudaDeviceEnablePeerAccess)");
  }

  Launch launch;
  launch.spec = spec;
  launch.body = body;
  launch.options = options();
  launch.schedule_key = schedule_key(spec);
  launch.threads_per_block = spec.block.x * spec.block.y * spec.block.z;
  const dim3 g = spec.grid;
  const uint64_t n_blocks = uint64_t(g.x) * g.y * g.z;
  const std::vector<uint32_t> order = block_order(launch, uint32_t(n_blocks));
  auto block_index = [&](uint32_t linear) {  // x fastest; 64-bit: g.x * g.y may exceed 2^32
    return uint3{linear % g.x, linear / g.x % g.y, unsigned(linear / (uint64_t(g.x) * g.y))};
  };

  const int workers = int(std::min<uint64_t>(uint64_t(launch.options.workers), n_blocks));
  if (workers <= 1) {
    Worker& w = this_worker();
    for (uint32_t k = 0; k < n_blocks && !launch.failed; ++k) run_block(launch, block_index(order[k]), w);
  } else {
    std::atomic<uint64_t> next{0};
    worker_pool().run(workers, [&] {
      Worker& w = this_worker();
      for (uint64_t k; !launch.failed && (k = next++) < n_blocks;)
        run_block(launch, block_index(order[k]), w);
    });
  }
  if (launch.failed) throw_violation(launch.check, launch.message);
  const std::string damage = check_all_guards();
  if (!damage.empty()) throw_violation("global-guard", "[global-guard] " + where + ": " + damage);
  note_work(spec.stream);
  return cudaSuccess;
}

}  // namespace db::emu::detail
