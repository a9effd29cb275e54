// The emulator's own behaviour outside kernels: settings from the environment, poisoned allocations,
// bounds-checked copies, streams, events, device queries, error strings, and what only an emulator
// can promise (poison from a shuffle outside its mask, device code refused on the host).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "collective_kernels.h"
#include "device_buffer.h"
#include "dreambooth/core/error.h"
#include "dreambooth/emu/device_memory.h"
#include "dreambooth/emu/options.h"
#include "dreambooth/emu/sync.h"
#include "dreambooth/emu/violation.h"

namespace db {
namespace {

using test::DeviceBuffer;

// Prints the settings each run of the suite uses (tests/run_kernel_tests.sh runs it several times).
class PrintOptions : public ::testing::Environment {
 public:
  void SetUp() override { std::printf("emulator: %s\n", emu::describe(emu::options()).c_str()); }
};
const auto* const print_options = ::testing::AddGlobalTestEnvironment(new PrintOptions);

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(EmuOptions, ParsedFromTheEnvironment) {
  ScopedEnv s("DB_EMU_SCHEDULE", "random:77"), c("DB_EMU_CP_ASYNC", "eager"), w("DB_EMU_WORKERS", "3"),
      k("DB_EMU_STACK_KB", "128");
  const emu::Options o = emu::options_from_env();
  EXPECT_EQ(o.schedule, emu::Schedule::Random);
  EXPECT_EQ(o.seed, 77u);
  EXPECT_TRUE(o.cp_async_eager);
  EXPECT_EQ(o.workers, 3);
  EXPECT_EQ(o.stack_bytes, size_t(128) << 10);
  EXPECT_EQ(emu::describe(o), "schedule=random:77 cp.async=eager workers=3 stack=128KiB");
  ScopedEnv d("DB_EMU_DEVICES", "2"), p("DB_EMU_PEER", "0"), m("DB_EMU_DEVICE_MB", "64");
  const emu::Options o2 = emu::options_from_env();
  EXPECT_EQ(o2.devices, 2);
  EXPECT_FALSE(o2.peer_access);
  EXPECT_EQ(o2.device_memory, size_t(64) << 20);
  EXPECT_TRUE(emu::describe(o2).ends_with("devices=2 peer=0 device_mb=64")) << emu::describe(o2);
}

TEST(EmuOptions, BadValuesAreErrors) {
  {
    ScopedEnv s("DB_EMU_SCHEDULE", "sideways");
    EXPECT_THROW(emu::options_from_env(), Error);
  }
  {
    ScopedEnv s("DB_EMU_WORKERS", "0");
    EXPECT_THROW(emu::options_from_env(), Error);
  }
  for (const char* n : {"0", "17"}) {
    ScopedEnv s("DB_EMU_DEVICES", n);
    EXPECT_THROW(emu::options_from_env(), Error);
  }
  {
    ScopedEnv s("DB_EMU_CP_ASYNC", "later");
    EXPECT_THROW(emu::options_from_env(), Error);
  }
}

TEST(EmuMemory, AllocationsArePoisonedAndTracked) {
  const size_t before = emu::live_allocation_count();
  float* d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 10 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 256, 0u);
  std::vector<uint32_t> bits(10);
  ASSERT_EQ(cudaMemcpy(bits.data(), d, 40, cudaMemcpyDeviceToHost), cudaSuccess);
  for (uint32_t b : bits) EXPECT_EQ(b, 0xFFFFFFFFu);  // NaN as f32, and as each bf16 half
  const auto a = emu::find_allocation(d + 3);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->base, d);
  EXPECT_EQ(a->size, 40u);
  EXPECT_EQ(a->kind, emu::MemoryKind::Device);
  EXPECT_TRUE(emu::find_allocation(d + 10).has_value());  // one past the end
  EXPECT_FALSE(emu::find_allocation(d + 11).has_value());
  EXPECT_EQ(emu::live_allocation_count(), before + 1);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(emu::live_allocation_count(), before);
}

TEST(EmuMemory, CopiesAndSetsAreBoundsChecked) {
  DeviceBuffer<float> d(16);
  std::vector<float> host(32, 1.f);
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 64, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d.get() + 8, host.data(), 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_TRUE(contains(emu::last_violation(), "destination bytes [32, 96) exceed allocation #"))
      << emu::last_violation();
  EXPECT_EQ(cudaMemcpy(host.data(), d.get(), 68, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.get(), 64, cudaMemcpyHostToDevice),
            cudaErrorInvalidValue);  // kind swapped
  EXPECT_TRUE(contains(emu::last_violation(), "destination is not inside a device allocation"))
      << emu::last_violation();
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_TRUE(contains(emu::last_violation(), "destination is device memory")) << emu::last_violation();
  EXPECT_EQ(cudaMemcpy(d.get(), host.data(), 64, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), d.get(), 64, cudaMemcpyDefault), cudaSuccess);
  EXPECT_EQ(cudaMemset(d.get() + 1, 0, 64), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(d.get() + 1, 0, 60), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(host.data(), 0, 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d.get() + 16, host.data(), 0, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);  // the last failing call's code
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(EmuMemory, FreeRejectsWhatItDidNotAllocate) {
  float *d = nullptr, *h = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), 64), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&h), 64), cudaSuccess);
  EXPECT_EQ(cudaFree(d + 1), cudaErrorInvalidValue);
  EXPECT_TRUE(contains(emu::last_violation(), "not its start")) << emu::last_violation();
  EXPECT_EQ(cudaFree(h), cudaErrorInvalidValue);  // pinned host memory needs cudaFreeHost
  EXPECT_EQ(cudaFreeHost(d), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue);  // twice
  EXPECT_EQ(cudaFreeHost(h), cudaSuccess);
  EXPECT_EQ(cudaFree(nullptr), cudaSuccess);
  cudaGetLastError();
}

TEST(EmuMemory, FreeReportsDamagedGuards) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under ASan the guard is poisoned: the write itself is reported (EmuAsan tests)";
#endif
  unsigned char* d = nullptr;
  ASSERT_EQ(cudaMallocManaged(reinterpret_cast<void**>(&d), 10), cudaSuccess);
  d[10] = 0;  // managed memory is host-accessible: a host-side overrun
  EXPECT_EQ(cudaFree(d), cudaErrorIllegalAddress);
  EXPECT_TRUE(contains(emu::last_violation(), "guard bytes after its end overwritten"))
      << emu::last_violation();
  cudaGetLastError();
}

TEST(EmuRuntime, StreamsAndEvents) {
  cudaStream_t s = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&stop), cudaSuccess);
  float ms = -1.f;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaErrorInvalidResourceHandle);  // not recorded
  EXPECT_EQ(cudaEventRecord(start, s), cudaSuccess);
  DeviceBuffer<float> d(1024);
  EXPECT_EQ(cudaMemsetAsync(d.get(), 0, 4096, s), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(stop, s), cudaSuccess);
  EXPECT_EQ(cudaStreamWaitEvent(nullptr, stop, 0), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(stop), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
  EXPECT_GE(ms, 0.f);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);  // destroyed
  EXPECT_EQ(cudaEventDestroy(start), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(stop), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(stop), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaGetLastError();
}

TEST(EmuRuntime, OneSm90DeviceWithAnHonestName) {
  int n = 0, dev = -1, v = 0;
  EXPECT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(cudaSetDevice(1), cudaErrorInvalidDevice);  // one device unless DB_EMU_DEVICES says more
  EXPECT_EQ(cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(dev, 0);
  cudaDeviceProp p{};
  ASSERT_EQ(cudaGetDeviceProperties(&p, 0), cudaSuccess);
  EXPECT_TRUE(contains(p.name, "emulator")) << p.name;
  EXPECT_EQ(p.major, 9);
  EXPECT_EQ(p.sharedMemPerBlockOptin, size_t(227) << 10);
  EXPECT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), cudaSuccess);
  EXPECT_EQ(v, 232448);
  EXPECT_EQ(cudaDeviceGetAttribute(&v, cudaDevAttrWarpSize, 0), cudaSuccess);
  EXPECT_EQ(v, 32);
  size_t free = 0, total = 0;
  EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  EXPECT_GT(total, 0u);
  EXPECT_LE(free, total);
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidConfiguration), "cudaErrorInvalidConfiguration");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
  cudaGetLastError();
}

TEST(EmuSemantics, ShuffleFromALaneOutsideTheMaskIsPoison) {
  DeviceBuffer<unsigned> out(32);
  ASSERT_EQ(test_kernels::shuffle_outside_mask(out.get()), cudaSuccess);
  const std::vector<unsigned> got = out.download();
  for (int lane = 0; lane < 16; ++lane) EXPECT_EQ(got[lane], 0xFFFFFFFFu) << lane;
}

TEST(EmuSemantics, DeviceCodeOutsideAKernelIsAnError) {
  try {
    __syncthreads();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_TRUE(contains(e.what(), "used outside a kernel")) << e.what();
  }
}

TEST(EmuSemantics, ResultsDoNotDependOnWorkersOrBlockOrder) {
  const int blocks = 64;
  std::vector<float> x(256 * blocks);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 29) - 14);
  DeviceBuffer<float> dx(x), dout(blocks);
  std::vector<float> first;
  for (int workers : {1, 4}) {
    for (emu::Schedule s : {emu::Schedule::Forward, emu::Schedule::Reverse, emu::Schedule::Random}) {
      emu::Options o = emu::options();
      o.workers = workers;
      o.schedule = s;
      emu::ScopedOptions scoped(o);
      ASSERT_EQ(test_kernels::block_sum(dx.get(), dout.get(), blocks), cudaSuccess);
      if (first.empty())
        first = dout.download();
      else
        EXPECT_EQ(dout.download(), first) << "workers " << workers << " schedule " << int(s);
    }
  }
}

}  // namespace
}  // namespace db
