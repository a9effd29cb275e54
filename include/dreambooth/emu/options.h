#pragma once
// Emulator settings: read once from the environment, overridable in tests with ScopedOptions.
//
//   DB_EMU_SCHEDULE   forward | reverse | random[:SEED] | lowest-first   (default forward)
//                     order in which runnable CUDA threads of a block are resumed, and blocks run
//   DB_EMU_CP_ASYNC   lazy | eager   (default lazy: cp.async data lands at the wait, not at issue)
//   DB_EMU_WORKERS    N OS threads running whole blocks in parallel (default 1)
//   DB_EMU_STACK_KB   fiber stack per CUDA thread in KiB (default 64; 256 under AddressSanitizer)
//   DB_EMU_DEVICES    number of emulated devices, 1..16 (default 1)
//   DB_EMU_PEER       1 | 0: whether distinct devices can access each other's memory (default 1)
//   DB_EMU_DEVICE_MB  memory limit per device in MiB (default 0: the host's memory, unlimited)
#include <cstddef>
#include <cstdint>
#include <string>

namespace db::emu {

enum class Schedule {
  Forward,      // round robin in thread index order: each thread runs until it blocks, then the next
  Reverse,      // the same, highest index first
  Random,       // a seeded random runnable thread each time (and a random block order)
  LowestFirst,  // always the lowest-index runnable thread: warp 0 runs ahead as far as it can
};

struct Options {
  Schedule schedule = Schedule::Forward;
  uint64_t seed = 1;              // for Schedule::Random
  bool cp_async_eager = false;    // copies land at issue instead of at cp.async.wait_*
  int workers = 1;                // OS threads running blocks; block order is meaningful only with 1
  size_t stack_bytes = 64 << 10;  // per CUDA thread (fiber), rounded up to pages; one guard page below
  int devices = 1;                // cudaGetDeviceCount
  bool peer_access = true;        // cudaDeviceCanAccessPeer between distinct devices
  size_t device_memory = 0;       // bytes of cudaMalloc per device; 0 = no limit but the host's
};

// The settings in force (parsed from the environment on first use; a bad value throws db::Error).
Options& options();
Options options_from_env();              // the environment's settings, ignoring overrides
std::string describe(const Options& o);  // "schedule=random:1 cp.async=lazy workers=1 stack=64KiB"

// RAII override for tests: replaces the settings while alive, restores them after.
class ScopedOptions {
 public:
  explicit ScopedOptions(const Options& o) : saved_(options()) { options() = o; }
  ~ScopedOptions() { options() = saved_; }
  ScopedOptions(const ScopedOptions&) = delete;
  ScopedOptions& operator=(const ScopedOptions&) = delete;

 private:
  Options saved_;
};

}  // namespace db::emu
