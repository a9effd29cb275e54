// The emulator's host-wait model (dreambooth/emu/host_waits.h), on which CudaTrain.OneHostWaitPerStep
// relies: a wait counts only when the host does not already know the work complete.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "dreambooth/emu/host_waits.h"

namespace db {
namespace {

TEST(EmuHostWaits, CountsOnlyWaitsOnUnknownWork) {
  cudaStream_t s;
  cudaEvent_t e;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
  void* d = nullptr;
  ASSERT_EQ(cudaMalloc(&d, 256), cudaSuccess);
  auto waits = [base = emu::host_waits()] { return emu::host_waits() - base; };

  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);  // nothing issued: no wait
  EXPECT_EQ(waits(), 0u);
  ASSERT_EQ(cudaMemsetAsync(d, 0, 256, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e, s), cudaSuccess);
  EXPECT_EQ(cudaEventQuery(e), cudaErrorNotReady);  // not known complete; not an error
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(e), cudaSuccess);
  EXPECT_EQ(waits(), 1u);
  EXPECT_EQ(cudaEventQuery(e), cudaSuccess);
  EXPECT_EQ(cudaEventSynchronize(e), cudaSuccess);  // known complete: no second wait
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(waits(), 1u);

  ASSERT_EQ(cudaMemsetAsync(d, 1, 256, s), cudaSuccess);
  {
    const emu::ScopedUncountedWaits uncounted;  // neither counted nor teaching the host
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  }
  EXPECT_EQ(waits(), 1u);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(waits(), 2u);

  unsigned char h[256];
  EXPECT_EQ(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);  // always a wait
  EXPECT_EQ(waits(), 3u);
  EXPECT_EQ(cudaMemcpy(h, h + 128, 64, cudaMemcpyHostToHost), cudaSuccess);  // host only: none
  EXPECT_EQ(waits(), 3u);

  ASSERT_EQ(cudaMemsetAsync(d, 3, 256, s), cudaSuccess);
  void* pinned = nullptr;
  ASSERT_EQ(cudaHostAlloc(&pinned, 256, cudaHostAllocDefault), cudaSuccess);
  EXPECT_EQ(cudaMemcpyAsync(pinned, d, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);  // truly async
  EXPECT_EQ(waits(), 3u);
  EXPECT_EQ(cudaMemcpyAsync(h, d, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);  // pageable: waits
  EXPECT_EQ(waits(), 4u);
  EXPECT_EQ(cudaMemcpyAsync(h, d, 256, cudaMemcpyDeviceToHost, s), cudaSuccess);  // nothing new before it
  EXPECT_EQ(waits(), 4u);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);  // synchronises the device: nothing pending
  EXPECT_EQ(waits(), 4u);

  ASSERT_EQ(cudaMemsetAsync(d, 2, 256, s), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);  // synchronises the device
  EXPECT_EQ(waits(), 5u);
  EXPECT_EQ(cudaEventDestroy(e), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

}  // namespace
}  // namespace db
