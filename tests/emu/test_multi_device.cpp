// Several emulated devices (DB_EMU_DEVICES): the current device per host thread, allocations, streams
// and events tagged with their device, copies between devices, peer access, and the runtime's errors
// where multi-GPU code goes wrong (CUDA Programming Guide, "Multi-Device System": a launch into another
// device's stream fails, a copy succeeds; an event recorded on another device's stream fails).
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "dreambooth/emu/device_memory.h"
#include "dreambooth/emu/options.h"
#include "dreambooth/emu/violation.h"
#include "dreambooth/kernels/elementwise.h"

namespace db {
namespace {

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// Two (or n) devices while alive; device 0 current again after, peer access as it was.
class Devices {
 public:
  explicit Devices(int n, bool peer = true, size_t device_memory = 0)
      : scoped_(with(n, peer, device_memory)) {}
  ~Devices() {
    cudaSetDevice(0);
    cudaGetLastError();
  }

 private:
  static emu::Options with(int n, bool peer, size_t device_memory) {
    emu::Options o = emu::options();
    o.devices = n, o.peer_access = peer, o.device_memory = device_memory;
    return o;
  }
  emu::ScopedOptions scoped_;
};

float* malloc_floats(size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
  return static_cast<float*>(p);
}

TEST(EmuMultiDevice, CurrentDeviceIsPerThreadAndAllocationsRememberIt) {
  Devices two(2);
  int n = 0, dev = -1;
  EXPECT_EQ(cudaGetDeviceCount(&n), cudaSuccess);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(cudaSetDevice(2), cudaErrorInvalidDevice);
  EXPECT_TRUE(contains(emu::last_violation(), "device 2 does not exist (DB_EMU_DEVICES=2)"))
      << emu::last_violation();
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  float* p1 = malloc_floats(16);
  std::thread([] {
    int d = -1;
    EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
    EXPECT_EQ(d, 0);  // a new host thread starts on device 0
  }).join();
  EXPECT_EQ(cudaGetDevice(&dev), cudaSuccess);
  EXPECT_EQ(dev, 1);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  float* p0 = malloc_floats(8);
  EXPECT_EQ(emu::find_allocation(p1)->device, 1);
  EXPECT_EQ(emu::find_allocation(p0)->device, 0);
  EXPECT_EQ(emu::live_allocation_bytes(1), 64u);
  cudaPointerAttributes a{};
  EXPECT_EQ(cudaPointerGetAttributes(&a, p1), cudaSuccess);
  EXPECT_EQ(a.device, 1);
  EXPECT_EQ(cudaFree(p1), cudaSuccess);  // from device 0: with unified addressing any device may free
  EXPECT_EQ(emu::live_allocation_bytes(1), 0u);
  EXPECT_EQ(cudaFree(p0), cudaSuccess);
}

TEST(EmuMultiDevice, CopiesBetweenDevicesWithAndWithoutPeerAccess) {
  for (bool peer : {true, false}) {
    Devices two(2, peer);
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
    float* a = malloc_floats(4);
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    float* b = malloc_floats(4);
    const std::vector<float> x = {1, 2, 3, 4};
    std::vector<float> y(4);
    ASSERT_EQ(cudaMemcpy(a, x.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaMemcpyPeer(b, 1, a, 0, 16), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(y.data(), b, 16, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(y, x);
    EXPECT_EQ(cudaMemcpyPeer(b, 0, a, 0, 16), cudaErrorInvalidValue);  // b is not on device 0
    EXPECT_TRUE(contains(emu::last_violation(), "not on device 0")) << emu::last_violation();
    EXPECT_EQ(cudaMemcpyPeerAsync(b, 1, a, 3, 16, nullptr), cudaErrorInvalidDevice);
    EXPECT_EQ(cudaMemcpy(a, b, 16, cudaMemcpyDeviceToDevice), cudaSuccess);  // unified addressing
    int can = -1;
    EXPECT_EQ(cudaDeviceCanAccessPeer(&can, 0, 1), cudaSuccess);
    EXPECT_EQ(can, peer ? 1 : 0);
    EXPECT_EQ(cudaDeviceCanAccessPeer(&can, 1, 1), cudaSuccess);
    EXPECT_EQ(can, 0);
    cudaFree(a);
    cudaFree(b);
  }
}

TEST(EmuMultiDevice, KernelsTouchAnotherDevicesMemoryOnlyWithPeerAccess) {
  Devices two(2);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  float* remote = malloc_floats(32);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  try {
    kernels::fill(DType::F32, remote, 32, 1.f, nullptr);
    ADD_FAILURE() << "a kernel on device 0 wrote device 1's memory without peer access";
  } catch (const emu::Violation& v) {
    EXPECT_EQ(v.check(), "peer-access");
    EXPECT_TRUE(contains(v.what(), "device 1")) << v.what();
  }
  cudaGetLastError();
  EXPECT_EQ(cudaDeviceEnablePeerAccess(1, 0), cudaSuccess);
  EXPECT_EQ(cudaDeviceEnablePeerAccess(1, 0), cudaErrorPeerAccessAlreadyEnabled);
  EXPECT_EQ(cudaDeviceEnablePeerAccess(0, 0), cudaErrorInvalidDevice);  // itself
  EXPECT_EQ(kernels::fill(DType::F32, remote, 32, 1.f, nullptr), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  float* local = malloc_floats(32);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(cudaDeviceDisablePeerAccess(1), cudaSuccess);
  EXPECT_EQ(cudaDeviceDisablePeerAccess(1), cudaErrorPeerAccessNotEnabled);
  EXPECT_THROW(kernels::fill(DType::F32, local, 32, 1.f, nullptr), emu::Violation);  // access is gone
  cudaGetLastError();
  cudaFree(remote);
  cudaFree(local);
}

TEST(EmuMultiDevice, PeerAccessOffRefusesToEnable) {
  Devices two(2, /*peer=*/false);
  EXPECT_EQ(cudaDeviceEnablePeerAccess(1, 0), cudaErrorPeerAccessUnsupported);
  cudaGetLastError();
}

TEST(EmuMultiDevice, StreamsAndEventsBelongToTheirDevice) {
  Devices two(2);
  cudaStream_t s0{}, s1{};
  cudaEvent_t e0{}, e1{};
  ASSERT_EQ(cudaStreamCreate(&s0), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  ASSERT_EQ(cudaStreamCreate(&s1), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&e1), cudaSuccess);
  float* x1 = malloc_floats(8);
  EXPECT_EQ(kernels::fill(DType::F32, x1, 8, 2.f, s1), cudaSuccess);
  EXPECT_EQ(kernels::fill(DType::F32, x1, 8, 2.f, s0), cudaErrorInvalidResourceHandle);  // s0 is device 0's
  EXPECT_TRUE(contains(emu::last_violation(), "the stream belongs to device 0 but device 1 is current"))
      << emu::last_violation();
  float host[8];
  EXPECT_EQ(cudaMemcpyAsync(host, x1, sizeof host, cudaMemcpyDeviceToHost, s0), cudaSuccess);  // copies may
  EXPECT_EQ(host[7], 2.f);
  EXPECT_EQ(cudaEventRecord(e1, s1), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(e0, s1), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventRecord(e0, nullptr), cudaErrorInvalidResourceHandle);  // the legacy stream of device 1
  EXPECT_EQ(cudaStreamWaitEvent(s0, e1, 0), cudaSuccess);                   // how devices wait on each other
  EXPECT_EQ(cudaEventSynchronize(e0), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  EXPECT_EQ(cudaEventRecord(e0, s0), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e0), cudaSuccess);
  cudaGetLastError();
  cudaFree(x1);
  for (cudaStream_t s : {s0, s1}) EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
  for (cudaEvent_t e : {e0, e1}) EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
}

TEST(EmuMultiDevice, MemoryIsAccountedAndLimitedPerDevice) {
  Devices two(2, true, size_t(1) << 20);
  size_t free = 0, total = 0;
  float* a = malloc_floats((size_t(3) << 20) / 16);  // 3/4 MiB on device 0
  void* b = nullptr;
  EXPECT_EQ(cudaMalloc(&b, size_t(1) << 19), cudaErrorMemoryAllocation);  // over device 0's MiB
  EXPECT_TRUE(contains(emu::last_violation(), "out of memory on device 0")) << emu::last_violation();
  EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  EXPECT_EQ(total, size_t(1) << 20);
  EXPECT_EQ(free, size_t(1) << 18);
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  EXPECT_EQ(cudaMalloc(&b, size_t(1) << 19), cudaSuccess);  // device 1 has its own MiB
  EXPECT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  EXPECT_EQ(free, size_t(1) << 19);
  cudaDeviceProp p{};
  EXPECT_EQ(cudaGetDeviceProperties(&p, 1), cudaSuccess);
  EXPECT_EQ(p.totalGlobalMem, size_t(1) << 20);
  EXPECT_EQ(cudaGetDeviceProperties(&p, 2), cudaErrorInvalidDevice);
  cudaGetLastError();
  cudaFree(a);
  cudaFree(b);
}

}  // namespace
}  // namespace db
