#pragma once
// Host waits: how often the host would have blocked on device work, for tests of "one host
// synchronisation per training step" (docs/ARCHITECTURE.md). The emulator runs every op when it is
// issued, so it counts by stream order instead of by time: each stream numbers the work issued on it
// (launches, async copies and memsets) and remembers how far the host knows it complete.
//   cudaStreamSynchronize(s)   a wait when s has work the host does not know complete
//   cudaDeviceSynchronize()    a wait when any stream of the current device has
//   cudaEventSynchronize(e)    a wait when the work e recorded is not known complete
//   cudaMemcpy / cudaMemcpyPeer touching device memory: always a wait (the host waits for the copy)
//   cudaMemcpyAsync from the device into pageable host memory: as a stream sync (the runtime returns
//                              only when the copy is done)
//   cudaFree, cudaFreeHost     synchronise the device, as the real runtime does
// Queries never count and teach the host nothing; cudaEventQuery answers cudaErrorNotReady while the
// event's work is not known complete (the device is taken to be as slow as stream order allows, so
// code that falls back on a query is exercised; a loop polling until ready would never end). A stream-side
// wait (cudaStreamWaitEvent) is not a host wait. ScopedUncountedWaits excludes the emulated build's GEMM and
// convolution stand-ins, which run the CPU reference on device memory and have no real-build twin:
// their waits are neither counted nor taken as knowledge that the streams' work is complete.
#include <cstdint>

namespace db::emu {

uint64_t host_waits();  // since the process started (all threads)

class ScopedUncountedWaits {
 public:
  ScopedUncountedWaits();
  ~ScopedUncountedWaits();
  ScopedUncountedWaits(const ScopedUncountedWaits&) = delete;
  ScopedUncountedWaits& operator=(const ScopedUncountedWaits&) = delete;
};

}  // namespace db::emu
