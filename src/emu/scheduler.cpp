// The block scheduler: one fiber per CUDA thread, resumed one at a time in the order the schedule
// dictates until each blocks (barrier, warp collective) or finishes; barriers as true rendezvous;
// deadlock and divergent-barrier detection when no thread can move.
#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "block.h"
#include "dreambooth/core/error.h"
#include "fiber_asan.h"

namespace db::emu::detail {

constinit thread_local const BuiltinVars* tls_vars = nullptr;

namespace {

constinit thread_local Thread* tls_thread = nullptr;

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

const char* barrier_name(BarrierKind k) {
  switch (k) {
    case BarrierKind::Sync:
      return "__syncthreads";
    case BarrierKind::Count:
      return "__syncthreads_count";
    case BarrierKind::And:
      return "__syncthreads_and";
    case BarrierKind::Or:
      return "__syncthreads_or";
  }
  return "?";
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

// "threads 0-127 at __syncthreads (a.cu:10); threads 128-255 at __syncthreads (a.cu:20)"
std::string barrier_groups(const Block& b) {
  std::vector<std::pair<const Thread*, std::vector<unsigned>>> groups;
  for (unsigned i = 0; i < b.n_threads; ++i) {
    const Thread& t = b.threads[i];
    if (t.state != ThreadState::AtBarrier) continue;
    auto g = std::find_if(groups.begin(), groups.end(), [&](const auto& p) {
      return same_site(p.first->site, t.site) && p.first->barrier_kind == t.barrier_kind;
    });
    if (g == groups.end())
      groups.push_back({&t, {i}});
    else
      g->second.push_back(i);
  }
  std::string s;
  for (const auto& [t, ids] : groups) {
    if (!s.empty()) s += "; ";
    s += "threads " + index_list(ids) + " wait at " + barrier_name(t->barrier_kind) + " (" +
         site_string(t->site) + ")";
  }
  return s;
}

// Where every unfinished thread of a stuck block waits.
std::string waits_description(const Block& b) {
  std::string s = barrier_groups(b);
  for (unsigned w = 0; w * 32 < b.n_threads; ++w) {
    uint32_t seen = 0;
    for (unsigned l = 0; l < 32 && w * 32 + l < b.n_threads; ++l) {
      const Thread& t = b.threads[w * 32 + l];
      if (t.state != ThreadState::AtWarp || (seen >> l & 1)) continue;
      uint32_t lanes = 0;
      for (unsigned k = l; k < 32 && w * 32 + k < b.n_threads; ++k) {
        const Thread& u = b.threads[w * 32 + k];
        if (u.state == ThreadState::AtWarp && u.call->op == t.call->op && u.call->mask == t.call->mask &&
            same_site(u.site, t.site))
          lanes |= 1u << k;
      }
      seen |= lanes;
      if (!s.empty()) s += "; ";
      s += "lanes " + lane_list(lanes) + " of warp " + std::to_string(w) + " wait at " + op_name(t.call->op) +
           " (mask " + hex_mask(t.call->mask) + ", " + site_string(t.site) + ") for lanes " +
           lane_list(t.call->mask & ~lanes);
    }
  }
  std::vector<unsigned> exited;
  for (unsigned i = 0; i < b.n_threads; ++i)
    if (b.threads[i].state == ThreadState::Done) exited.push_back(i);
  if (!exited.empty()) s += "; threads " + index_list(exited) + " have exited";
  return s;
}

void report_stuck(Block& b) {
  bool any_warp = false, any_barrier = false, any_exited = false;
  unsigned first_exited = 0;
  for (unsigned i = 0; i < b.n_threads; ++i) {
    const ThreadState s = b.threads[i].state;
    any_warp |= s == ThreadState::AtWarp;
    any_barrier |= s == ThreadState::AtBarrier;
    if (s == ThreadState::Done && !any_exited) {
      any_exited = true;
      first_exited = i;
    }
  }
  if (any_barrier && any_exited && !any_warp) {
    record_violation(
        *b.launch, &b.idx, &b.threads[first_exited].vars.thread_idx, "divergent-barrier",
        "threads exited while others wait at a barrier (every thread of the block must reach each "
        "__syncthreads): " +
            waits_description(b));
  } else {
    record_violation(*b.launch, &b.idx, nullptr, "deadlock",
                     "no thread of the block can proceed: " + waits_description(b));
  }
  b.failed = true;
}

void release_barrier(Block& b, Thread& last) {
  const Thread& first = b.threads[0];
  unsigned count = 0;
  for (unsigned i = 0; i < b.n_threads; ++i) {
    const Thread& t = b.threads[i];
    if (!same_site(t.site, first.site) || t.barrier_kind != first.barrier_kind)
      fail(last, "divergent-barrier", "threads wait at different barriers: " + barrier_groups(b));
    count += t.predicate ? 1 : 0;
  }
  int result = 0;
  switch (first.barrier_kind) {
    case BarrierKind::Sync:
      result = 0;
      break;
    case BarrierKind::Count:
      result = int(count);
      break;
    case BarrierKind::And:
      result = count == b.n_threads;
      break;
    case BarrierKind::Or:
      result = count > 0;
      break;
  }
  for (unsigned i = 0; i < b.n_threads; ++i) {
    b.threads[i].barrier_result = result;
    make_runnable(b, b.threads[i]);
  }
  b.barrier_arrived = 0;
}

void thread_main(Thread& t) {
  const KernelBody& body = t.block->launch->body;
  bool threw = false;
  std::string what;
  try {
    body.invoke(body.closure);
  } catch (const std::exception& e) {  // (not boost's forced_unwind, which must pass through)
    threw = true;
    what = e.what();
  }
  // Never switch fibers inside a catch handler: the C++ runtime's caught-exception stack is per OS thread.
  if (threw) fail(t, "exception", "the kernel threw: " + what);
  check_lane_exit(t);
  t.copies.clear();  // cp.async never waited for: the data never lands
  t.state = ThreadState::Done;
  t.block->runnable.clear(t.linear);
  ++t.block->done;
}

// The fiber of CUDA thread t; first resumed by the scheduler, it runs the kernel and then returns to
// the scheduler for good.
void start_fiber(Thread& t, Worker& w, size_t stack_bytes) {
  t.fiber = boost::context::fiber(
      std::allocator_arg, PooledStack(w.stacks, stack_bytes, &t.stack_bottom, &t.stack_size),
      [&t](boost::context::fiber&& scheduler) {
        Block& b = *t.block;
        asan_finish_switch(nullptr, &b.scheduler_stack_bottom, &b.scheduler_stack_size);
        t.scheduler = std::move(scheduler);
        thread_main(t);
        asan_start_switch(nullptr, b.scheduler_stack_bottom, b.scheduler_stack_size);  // this fiber ends
        return std::move(t.scheduler);
      });
}

int pick(Block& b) {
  const unsigned n = b.n_threads;
  int i = -1;
  switch (b.launch->options.schedule) {
    case Schedule::Forward:
      i = b.runnable.first_at_or_after(unsigned(b.cursor + 1) % n);
      break;
    case Schedule::Reverse:
      i = b.runnable.last_at_or_before(unsigned(b.cursor + n - 1) % n);
      break;
    case Schedule::LowestFirst:
      i = b.runnable.first_at_or_after(0);
      break;
    case Schedule::Random: {
      const unsigned c = b.runnable.count();
      if (c) i = b.runnable.nth(unsigned(splitmix64(b.rng) % c));
      break;
    }
  }
  if (i >= 0) b.cursor = i;
  return i;
}

}  // namespace

[[noreturn]] void called_outside_kernel(const char* what) {
  throw Error(what, " used outside a kernel (device code runs only inside DB_LAUNCH)");
}

void RunnableSet::reset(unsigned n) {
  n_ = n;
  words_.fill(0);
  for (unsigned i = 0; i < n / 64; ++i) words_[i] = ~uint64_t(0);
  if (n % 64) words_[n / 64] = (uint64_t(1) << (n % 64)) - 1;
}

unsigned RunnableSet::count() const {
  unsigned c = 0;
  for (unsigned w = 0; w < (n_ + 63) / 64; ++w) c += unsigned(std::popcount(words_[w]));
  return c;
}

int RunnableSet::first_at_or_after(unsigned i) const {
  const unsigned nw = (n_ + 63) / 64;
  for (unsigned k = 0; k <= nw; ++k) {  // k == nw revisits the start word's low bits (wrap-around)
    const unsigned w = (i / 64 + k) % nw;
    uint64_t bits = words_[w];
    if (k == 0) bits &= ~uint64_t(0) << (i % 64);
    if (bits) return int(w * 64 + unsigned(std::countr_zero(bits)));
  }
  return -1;
}

int RunnableSet::last_at_or_before(unsigned i) const {
  const unsigned nw = (n_ + 63) / 64;
  for (unsigned k = 0; k <= nw; ++k) {
    const unsigned w = (i / 64 + nw - k % nw) % nw;
    uint64_t bits = words_[w];
    if (k == 0 && i % 64 != 63) bits &= (uint64_t(1) << (i % 64 + 1)) - 1;
    if (bits) return int(w * 64 + 63 - unsigned(std::countl_zero(bits)));
  }
  return -1;
}

int RunnableSet::nth(unsigned k) const {
  for (unsigned w = 0; w < (n_ + 63) / 64; ++w) {
    uint64_t bits = words_[w];
    const unsigned c = unsigned(std::popcount(bits));
    if (k >= c) {
      k -= c;
      continue;
    }
    for (; k; --k) bits &= bits - 1;  // drop the k lowest set bits
    return int(w * 64 + unsigned(std::countr_zero(bits)));
  }
  return -1;
}

Worker::Worker()
    : arena_bytes(kSharedOptinLimit + (97 << 10)) {  // a multiple of 4096, as aligned_alloc wants
  arena = static_cast<unsigned char*>(std::aligned_alloc(4096, arena_bytes));
  if (!arena) throw std::bad_alloc();
}
Worker::~Worker() {
  std::free(arena);
}

Worker& this_worker() {
  thread_local Worker w;
  return w;
}

Thread& current_thread(const char* what) {
  Thread* t = tls_thread;
  if (!t) called_outside_kernel(what);
  return *t;
}

bool in_cuda_thread() {
  return tls_thread != nullptr;
}

void suspend(Thread& t) {
  Block& b = *t.block;
  asan_start_switch(&t.asan_fake_stack, b.scheduler_stack_bottom, b.scheduler_stack_size);
  t.scheduler = std::move(t.scheduler).resume();
  asan_finish_switch(t.asan_fake_stack, &b.scheduler_stack_bottom, &b.scheduler_stack_size);
}

void make_runnable(Block& b, Thread& t) {
  t.state = ThreadState::Runnable;
  b.runnable.set(t.linear);
}

void record_violation(Launch& launch, const uint3* block, const uint3* thread, const char* check,
                      const std::string& message) {
  std::string text = std::string("[") + check + "] kernel " + kernel_name(launch.spec.kernel_name) +
                     " (launched at " + site_string(launch.spec.site) + ")";
  if (block) text += " block " + dim_string(*block);
  if (thread) text += " thread " + dim_string(*thread);
  text += ": " + message;
  std::lock_guard lock(launch.mutex);
  if (launch.check.empty()) {
    launch.check = check;
    launch.message = text;
  }
  launch.failed = true;
}

[[noreturn]] void fail(Thread& t, const char* check, const std::string& message) {
  record_violation(*t.block->launch, &t.block->idx, &t.vars.thread_idx, check, message);
  t.block->failed = true;
  t.state = ThreadState::Aborted;
  t.block->runnable.clear(t.linear);
  suspend(t);  // never resumed: the block is abandoned and this fiber unwound
  std::abort();
}

int block_barrier(BarrierKind kind, int predicate, const std::source_location& site) {
  Thread& t = current_thread(barrier_name(kind));
  Block& b = *t.block;
  t.state = ThreadState::AtBarrier;
  t.site = site;
  t.barrier_kind = kind;
  t.predicate = predicate != 0;
  b.runnable.clear(t.linear);
  if (++b.barrier_arrived == b.n_threads) release_barrier(b, t);
  suspend(t);
  return t.barrier_result;
}

[[noreturn]] void trap(const std::source_location& site) {
  Thread& t = current_thread("__trap");
  fail(t, "trap", "__trap() at " + site_string(site));
}

void run_block(Launch& launch, uint3 block_idx, Worker& w) {
  const unsigned n = launch.threads_per_block;
  if (w.threads.size() < n) w.threads.resize(n);
  Block b;
  b.launch = &launch;
  b.idx = block_idx;
  b.n_threads = n;
  b.threads = w.threads.data();
  b.arena = w.arena;
  b.arena_bytes = w.arena_bytes;
  b.dynamic_bytes = launch.spec.dynamic_smem;
  b.vars = &w.vars;
  const dim3 bd = launch.spec.block, gd = launch.spec.grid;
  b.rng = launch.options.seed * 0x9E3779B97F4A7C15ull ^ launch.schedule_key * 0xD1B54A32D192ED03ull ^
          ((uint64_t(block_idx.z) * gd.y + block_idx.y) * gd.x + block_idx.x);
  b.cursor = launch.options.schedule == Schedule::Reverse ? 0 : -1;
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = w.threads[i];
    t.vars = {uint3{i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y)}, block_idx, bd, gd};
    t.linear = i;
    t.warp = i / 32;
    t.lane = i % 32;
    t.state = ThreadState::Runnable;
    t.call = nullptr;
    t.copies.clear();
    t.committed_groups = 0;
    t.block = &b;
  }
  b.runnable.reset(n);
  begin_shared_memory(b);

  while (b.done < n && !b.failed) {
    const int i = pick(b);
    if (i < 0) {
      report_stuck(b);
      break;
    }
    Thread& t = b.threads[i];
    if (!t.fiber) start_fiber(t, w, launch.options.stack_bytes);
    tls_thread = &t;
    tls_vars = &t.vars;
    void* fake_stack = nullptr;
    asan_start_switch(&fake_stack, t.stack_bottom, t.stack_size);
    t.fiber = std::move(t.fiber).resume();
    asan_finish_switch(fake_stack, nullptr, nullptr);
    tls_thread = nullptr;
    tls_vars = nullptr;
  }
  if (!b.failed) check_shared_guards(b);
  // Abandon the threads of a failed block: destroying a suspended fiber unwinds its stack.
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    if (!t.fiber) continue;
    tls_thread = &t;
    tls_vars = &t.vars;
    t.fiber = boost::context::fiber();
    tls_thread = nullptr;
    tls_vars = nullptr;
  }
}

}  // namespace db::emu::detail
