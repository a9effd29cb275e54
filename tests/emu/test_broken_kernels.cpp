// The emulator's negative tests: each broken kernel (tests/emu/broken_kernels.cu) must be reported,
// one bug class per test, so the kernel suite is proven able to fail. Left out of the ASan run
// (violations end fibers with exceptions, which ASan misreads: google/sanitizers#189); the EmuAsan
// tests at the end run only there and check that ASan itself reports bad accesses at the kernel line.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "broken_kernels.h"
#include "collective_kernels.h"
#include "device_buffer.h"
#include "dreambooth/emu/options.h"
#include "dreambooth/emu/violation.h"

namespace db {
namespace {

using test::DeviceBuffer;

// Runs f, which must throw a Violation of the given check; returns its message.
template <class F>
std::string expect_violation(const std::string& check, F&& f) {
  try {
    f();
  } catch (const emu::Violation& v) {
    EXPECT_EQ(v.check(), check) << v.what();
    EXPECT_EQ(emu::last_violation(), v.what());
    EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchFailure);
    return v.what();
  }
  ADD_FAILURE() << "no violation; expected [" << check << "]";
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

emu::Options with_schedule(emu::Schedule s, bool eager = false) {
  emu::Options o = emu::options();
  o.schedule = s;
  o.cp_async_eager = eager;
  o.workers = 1;
  return o;
}

std::vector<float> iota_floats(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(i + 1);
  return v;
}

bool is_poison(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return bits == 0xFFFFFFFFu;
}

TEST(EmuBroken, MissingSyncthreadsReadsPoisonUnderForwardAndReverse) {
  const std::vector<float> x = iota_floats(128);
  DeviceBuffer<float> dx(x), dy(128);
  for (emu::Schedule s :
       {emu::Schedule::Forward, emu::Schedule::Reverse, emu::Schedule::Random, emu::Schedule::LowestFirst}) {
    emu::ScopedOptions scoped(with_schedule(s));
    ASSERT_EQ(broken_kernels::missing_barrier(dx.get(), dy.get(), true), cudaSuccess);
    std::vector<float> y = dy.download();
    for (int t = 0; t < 128; ++t) ASSERT_EQ(y[t], x[(t + 32) % 128]) << "fixed kernel, schedule " << int(s);
    ASSERT_EQ(broken_kernels::missing_barrier(dx.get(), dy.get(), false), cudaSuccess);
    y = dy.download();
    int poisoned = 0;
    for (float v : y) poisoned += is_poison(v);
    // Each thread runs to completion before the next starts: it reads elements not stored yet.
    if (s == emu::Schedule::Forward || s == emu::Schedule::LowestFirst) {
      EXPECT_EQ(poisoned, 96);
    } else if (s == emu::Schedule::Reverse) {
      EXPECT_EQ(poisoned, 32);
    } else {
      EXPECT_GT(poisoned, 0);
    }
  }
}

TEST(EmuBroken, EarlyReturnBeforeBarrierIsDivergent) {
  DeviceBuffer<float> y(64);
  const std::string m = expect_violation("divergent-barrier", [&] { broken_kernels::early_return(y.get()); });
  EXPECT_TRUE(contains(m, "early_return_kernel")) << m;
  EXPECT_TRUE(contains(m, "threads 5 have exited")) << m;
  EXPECT_TRUE(contains(m, "broken_kernels.cu:")) << m;
}

TEST(EmuBroken, BarriersAtDifferentSitesAreDivergent) {
  DeviceBuffer<float> y(64);
  const std::string m =
      expect_violation("divergent-barrier", [&] { broken_kernels::barrier_sites(y.get()); });
  EXPECT_TRUE(contains(m, "threads 0-31 wait at __syncthreads")) << m;
  EXPECT_TRUE(contains(m, "threads 32-63 wait at __syncthreads")) << m;
}

TEST(EmuBroken, SharedMemoryOverrunHitsTheGuard) {
  DeviceBuffer<float> y(64);
  const std::string m = expect_violation("smem-guard", [&] { broken_kernels::shared_overrun(y.get()); });
  EXPECT_TRUE(contains(m, "after shared variable 'tile'")) << m;
  EXPECT_TRUE(contains(m, "block (0,0,0)")) << m;
}

TEST(EmuBroken, GlobalOverrunHitsTheAllocationGuard) {
  DeviceBuffer<float> y(100);
  const std::string m =
      expect_violation("global-guard", [&] { broken_kernels::global_overrun(y.get(), 100); });
  EXPECT_TRUE(contains(m, "(400 bytes, device 0)")) << m;
  EXPECT_TRUE(contains(m, "the first at byte 400")) << m;
  EXPECT_TRUE(contains(m, "global_overrun_kernel")) << m;
}

TEST(EmuBroken, ShuffleByALaneOutsideItsMask) {
  DeviceBuffer<int> y(32);
  const std::string m =
      expect_violation("warp-mask", [&] { broken_kernels::shuffle_caller_outside_mask(y.get()); });
  EXPECT_TRUE(contains(m, "does not include the calling lane")) << m;
}

TEST(EmuBroken, ShuffleWhoseMaskNamesLanesThatExit) {
  DeviceBuffer<int> y(32);
  const std::string m =
      expect_violation("warp-exited", [&] { broken_kernels::shuffle_half_warp_exits(y.get()); });
  EXPECT_TRUE(contains(m, "__shfl_xor_sync (mask 0xffffffff")) << m;
}

TEST(EmuBroken, ShuffleMasksThatDisagree) {
  DeviceBuffer<int> y(32);
  // Which pair of lanes is caught first depends on the schedule; the check does not.
  const std::string m =
      expect_violation("warp-mismatch", [&] { broken_kernels::shuffle_mask_mismatch(y.get()); });
  EXPECT_TRUE(contains(m, "__shfl_sync (mask 0xffffffff")) << m;
}

TEST(EmuBroken, HalfAWarpAtAShuffleAndHalfAtABarrierDeadlock) {
  DeviceBuffer<int> y(64);
  const std::string m =
      expect_violation("deadlock", [&] { broken_kernels::shuffle_then_barrier_deadlock(y.get()); });
  EXPECT_TRUE(contains(m, "lanes 0-15 of warp 0 wait at __shfl_xor_sync")) << m;
  EXPECT_TRUE(contains(m, "wait at __syncthreads")) << m;
}

TEST(EmuBroken, HostPointerArgumentsAreRejected) {
  std::vector<float> host(256, 1.f);
  DeviceBuffer<float> out(1);
  std::string m =
      expect_violation("host-pointer", [&] { test_kernels::block_sum(host.data(), out.get(), 1); });
  EXPECT_TRUE(contains(m, "argument 0 points to host memory")) << m;
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 256 * sizeof(float)), cudaSuccess);
  m = expect_violation("host-pointer", [&] { test_kernels::block_sum(pinned, out.get(), 1); });
  EXPECT_TRUE(contains(m, "pinned host")) << m;
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
}

TEST(EmuBroken, MissingCpAsyncWaitReadsPoisonWhenCopiesLandLazily) {
  const std::vector<float> x = iota_floats(128);
  DeviceBuffer<float> dx(x), dy(128);
  {
    emu::ScopedOptions lazy(with_schedule(emu::Schedule::Forward, false));
    ASSERT_EQ(broken_kernels::cp_async_missing_wait(dx.get(), dy.get(), true), cudaSuccess);
    std::vector<float> y = dy.download();
    for (int t = 0; t < 128; ++t) ASSERT_EQ(y[t], x[(t + 1) % 128]);
    ASSERT_EQ(broken_kernels::cp_async_missing_wait(dx.get(), dy.get(), false), cudaSuccess);
    y = dy.download();
    for (int t = 0; t < 128; ++t) ASSERT_TRUE(is_poison(y[t])) << t;
  }
  emu::ScopedOptions eager(
      with_schedule(emu::Schedule::Forward, true));  // hides the bug: why lazy is the default
  ASSERT_EQ(broken_kernels::cp_async_missing_wait(dx.get(), dy.get(), false), cudaSuccess);
  EXPECT_EQ(dy.download()[0], x[1]);
}

TEST(EmuBroken, MissingTrailingBarrierOnADoubleBufferUnderEagerCopies) {
  const int tiles = 4;
  const std::vector<float> x = iota_floats(128 * tiles);
  std::vector<float> want(128, 0.f);
  for (int t = 0; t < 128; ++t)
    for (int k = 0; k < tiles; ++k) want[t] += x[k * 128 + (t + 1) % 128];
  DeviceBuffer<float> dx(x), dy(128);
  auto run = [&](emu::Schedule s, bool eager, bool fixed) {
    emu::ScopedOptions scoped(with_schedule(s, eager));
    EXPECT_EQ(broken_kernels::double_buffer(dx.get(), dy.get(), tiles, fixed), cudaSuccess);
    return dy.download();
  };
  // Copies landing at the wait hide the race: the refill of a buffer lands after the next barrier.
  EXPECT_EQ(run(emu::Schedule::Forward, false, false), want);
  // Landing at issue, with warp 0 running ahead, refills buf[k % 2] before thread 127 has read it.
  EXPECT_NE(run(emu::Schedule::LowestFirst, true, false), want);
  EXPECT_EQ(run(emu::Schedule::LowestFirst, true, true), want);
}

TEST(EmuBroken, LaunchConfigurationsTheRuntimeRejects) {
  struct Case {
    dim3 grid, block;
    const char* message;
  };
  const Case cases[] = {{dim3(1), dim3(1025), "block (1025,1,1) exceeds the per-dimension limits"},
                        {dim3(1), dim3(512, 3), "has 1536 threads"},
                        {dim3(1), dim3(1, 1, 65), "exceeds the per-dimension limits"},
                        {dim3(1, 65536), dim3(32), "exceeds the limits"},
                        {dim3(0), dim3(32), "has a zero dimension"}};
  for (const Case& c : cases) {
    EXPECT_EQ(broken_kernels::empty(c.grid, c.block, 0), cudaErrorInvalidConfiguration);
    EXPECT_TRUE(contains(emu::last_violation(), c.message)) << emu::last_violation();
    EXPECT_TRUE(contains(emu::last_violation(), "[launch-config] kernel empty_kernel"))
        << emu::last_violation();
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // returned by DB_LAUNCH, as <<<>>> + cudaGetLastError() does
  }
  EXPECT_EQ(broken_kernels::empty(dim3(2), dim3(1024), 0), cudaSuccess);
}

TEST(EmuBroken, DynamicSharedMemoryOver48KiBNeedsTheAttribute) {
  EXPECT_EQ(broken_kernels::empty(dim3(1), dim3(32), 48 << 10), cudaSuccess);
  EXPECT_EQ(broken_kernels::empty(dim3(1), dim3(32), (48 << 10) + 4), cudaErrorInvalidValue);
  EXPECT_TRUE(contains(emu::last_violation(), "cudaFuncAttributeMaxDynamicSharedMemorySize"))
      << emu::last_violation();
  ASSERT_EQ(broken_kernels::allow_empty_dynamic_smem(100 << 10), cudaSuccess);
  EXPECT_EQ(broken_kernels::empty(dim3(1), dim3(32), 100 << 10), cudaSuccess);
  EXPECT_EQ(broken_kernels::empty(dim3(1), dim3(32), (100 << 10) + 4), cudaErrorInvalidValue);
  EXPECT_EQ(broken_kernels::allow_empty_dynamic_smem((227 << 10) + 1), cudaErrorInvalidValue);  // sm_90 cap
}

TEST(EmuBroken, StaticSharedMemoryOver48KiB) {
  DeviceBuffer<float> y(32);
  const std::string m =
      expect_violation("smem-limit", [&] { broken_kernels::static_smem_over_limit(y.get()); });
  EXPECT_TRUE(contains(m, "49156 bytes")) << m;
}

TEST(EmuBroken, LdmatrixAddressesMustBeAlignedSharedMemory) {
  DeviceBuffer<uint32_t> y(32), rows(32);
  std::string m = expect_violation("ldmatrix-address",
                                   [&] { broken_kernels::ldmatrix_bad_address(y.get(), rows.get(), false); });
  EXPECT_TRUE(contains(m, "not 16-byte aligned")) << m;
  m = expect_violation("ldmatrix-address",
                       [&] { broken_kernels::ldmatrix_bad_address(y.get(), rows.get(), true); });
  EXPECT_TRUE(contains(m, "not 16 bytes inside one shared-memory variable")) << m;
}

TEST(EmuBroken, MmaNeedsAFullWarp) {
  DeviceBuffer<float> y(16);
  const std::string m = expect_violation("warp-aligned", [&] { broken_kernels::mma_half_warp(y.get()); });
  EXPECT_TRUE(contains(m, "needs all 32 lanes")) << m;
}

TEST(EmuBroken, CpAsyncSourceOutsideItsAllocation) {
  DeviceBuffer<float> x(8), y(32);
  EXPECT_EQ(broken_kernels::cp_async_source(x.get(), y.get(), 4), cudaSuccess);  // floats 4..7: inside
  const std::string m =
      expect_violation("cp-async", [&] { broken_kernels::cp_async_source(x.get(), y.get(), 8); });
  EXPECT_TRUE(contains(m, "(32 bytes, device 0)")) << m;
}

TEST(EmuBroken, TrapEndsTheLaunch) {
  DeviceBuffer<float> y(32);
  const std::string m = expect_violation("trap", [&] { broken_kernels::trap(y.get()); });
  EXPECT_TRUE(contains(m, "thread (3,0,0)")) << m;
}

#if defined(__SANITIZE_ADDRESS__)
// Under AddressSanitizer the guard zones are poisoned too: the bad access itself is reported, at the
// kernel's source line, by a child process (gtest death test) that the sanitizer ends.
TEST(EmuAsan, GlobalReadPastTheEndIsReportedAtTheKernelLine) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer<float> x(40), y(64);
  EXPECT_DEATH(broken_kernels::global_overread(x.get(), y.get(), 40),
               "use-after-poison.*broken_kernels.cu:[0-9]+");
}

TEST(EmuAsan, SharedWritePastAnArrayIsReportedAtTheKernelLine) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer<float> y(64);
  // UBSan sees the index leave float[64] first; ASan's poisoned guard would catch it otherwise.
  EXPECT_DEATH(broken_kernels::shared_overrun(y.get()),
               "broken_kernels.cu:[0-9]+:[0-9]+: runtime error: index 64 out of "
               "bounds|use-after-poison.*broken_kernels.cu");
}
#endif

}  // namespace
}  // namespace db
