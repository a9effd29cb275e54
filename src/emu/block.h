#pragma once
// Internal state of the emulator: a launch, the block being run, its CUDA threads (one fiber each),
// and the worker (OS thread) that runs blocks one after another. Only src/emu/ sees this header.
#include <boost/context/fiber.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <source_location>
#include <string>
#include <vector>

#include "dreambooth/emu/builtins.h"
#include "dreambooth/emu/launch.h"
#include "dreambooth/emu/options.h"
#include "dreambooth/emu/shared_memory.h"
#include "dreambooth/emu/sync.h"
#include "dreambooth/emu/warp.h"
#include "device_limits.h"
#include "stack_pool.h"

namespace db::emu::detail {

constexpr size_t kSharedGuardBytes = 64;

enum class ThreadState : unsigned char { Runnable, AtBarrier, AtWarp, Done, Aborted };

struct PendingCopy {  // a cp.async not landed yet
  void* dst;
  const void* src;
  int cp_size;
  int src_size;
  uint64_t group;  // committed-group number it belongs to (== committed_groups while uncommitted)
};

struct Block;

struct Thread {
  BuiltinVars vars{};
  unsigned linear = 0, warp = 0, lane = 0;
  ThreadState state = ThreadState::Runnable;
  boost::context::fiber fiber;      // its suspended continuation (empty: not started yet, or finished)
  boost::context::fiber scheduler;  // while it runs: the scheduler to switch back to
  std::source_location site;        // where it waits (barrier or warp collective)
  BarrierKind barrier_kind = BarrierKind::Sync;
  int predicate = 0;
  int barrier_result = 0;
  WarpCall* call = nullptr;  // its collective while AtWarp
  std::vector<PendingCopy> copies;
  uint64_t committed_groups = 0;
  Block* block = nullptr;
  // Its fiber stack, and ASan's fake stack while suspended (fiber_asan.h).
  const void* stack_bottom = nullptr;
  size_t stack_size = 0;
  void* asan_fake_stack = nullptr;
};

// The runnable threads of a block as a bitset: every schedule picks in O(threads / 64).
class RunnableSet {
 public:
  void reset(unsigned n);  // all n runnable
  void set(unsigned i) { words_[i >> 6] |= uint64_t(1) << (i & 63); }
  void clear(unsigned i) { words_[i >> 6] &= ~(uint64_t(1) << (i & 63)); }
  unsigned count() const;
  int first_at_or_after(unsigned i) const;  // cyclic; -1 when empty
  int last_at_or_before(unsigned i) const;  // cyclic; -1 when empty
  int nth(unsigned k) const;                // k < count()

 private:
  unsigned n_ = 0;
  std::array<uint64_t, kMaxThreadsPerBlock / 64> words_{};
};

struct SharedVar {
  const SharedSite* site;
  size_t offset;  // in the arena
};

struct Launch {
  LaunchSpec spec;
  KernelBody body;
  Options options;
  // Seeds the random schedule: a function of the kernel and its launch site only, so one test run
  // alone interleaves exactly as it does inside the whole suite (reproducible with a filter).
  uint64_t schedule_key = 0;
  unsigned threads_per_block = 0;
  size_t dynamic_limit = kSharedDefaultDynamicLimit;  // cudaFuncAttributeMaxDynamicSharedMemorySize
  std::atomic<bool> failed{false};
  std::mutex mutex;   // guards the first violation below
  std::string check;  // "" while none
  std::string message;
};

struct Block {
  Launch* launch = nullptr;
  uint3 idx{};
  unsigned n_threads = 0;
  Thread* threads = nullptr;
  RunnableSet runnable;
  int cursor = -1;
  uint64_t rng = 0;
  unsigned barrier_arrived = 0;
  unsigned done = 0;
  std::array<uint32_t, kMaxThreadsPerBlock / 32> warp_waiting{};  // lanes waiting at a collective
  bool failed = false;
  const void* scheduler_stack_bottom = nullptr;  // the worker's own stack, for ASan's fiber switches
  size_t scheduler_stack_size = 0;
  // Shared memory: [guard][dynamic][guard] then per static variable [pad][variable][guard].
  unsigned char* arena = nullptr;
  size_t arena_bytes = 0;
  size_t dynamic_bytes = 0;
  size_t top = 0;           // first free arena byte
  size_t static_bytes = 0;  // sum of static variable sizes
  std::vector<SharedVar>* vars = nullptr;
};

// The OS thread's reusable resources for running blocks.
struct Worker {
  Worker();
  ~Worker();
  StackPool stacks;
  std::vector<Thread> threads;
  std::vector<SharedVar> vars;
  unsigned char* arena;
  size_t arena_bytes;
};
Worker& this_worker();

// --- scheduler.cpp
void run_block(Launch& launch, uint3 block_idx, Worker& worker);
Thread& current_thread(const char* what);
bool in_cuda_thread();    // whether the caller runs inside a kernel
void suspend(Thread& t);  // back to the scheduler until something makes t runnable again
void make_runnable(Block& b, Thread& t);
// Records the violation for the launch (first one wins) and never returns: the thread stays
// suspended and its fiber is unwound when the block is abandoned.
[[noreturn]] void fail(Thread& t, const char* check, const std::string& message);
// Records a violation found outside any CUDA thread (block-end and launch-end checks).
void record_violation(Launch& launch, const uint3* block, const uint3* thread, const char* check,
                      const std::string& message);

// --- shared_memory.cpp
void begin_shared_memory(Block& b);
void check_shared_guards(Block& b);  // records a violation on damage
// Which shared region [p, p + n) lies in ("dynamic shared memory", "'tile' (file:line)"), or "" if it
// is not inside one region.
std::string shared_region(const Block& b, const void* p, size_t n);

// --- ptx.cpp
void compute_mma(WarpCall* const calls[32]);
void compute_ldmatrix(Block& b, Thread& completing, unsigned warp, WarpCall* const calls[32]);  // may fail()

// --- warp.cpp
void complete_collective(Block& b, Thread& completing, uint32_t mask);  // may fail()
void check_lane_exit(Thread& t);  // a lane leaving while a collective that names it waits

// --- messages.cpp
std::string site_string(const std::source_location& s);       // "file:line"
std::string dim_string(const uint3& d);                       // "(x,y,z)"
std::string index_list(const std::vector<unsigned>& sorted);  // "0-31,64"
std::string lane_list(uint32_t mask);                         // "0-15,17"
std::string hex_mask(uint32_t mask);                          // "0x0000ffff"
const char* op_name(WarpOp op);
std::string kernel_name(const char* as_written);  // "(gn<8, true>)" -> "gn<8, true>"

}  // namespace db::emu::detail
