#pragma once
// Which backend runs the math, and the one factory every pipeline gets its backend from.
//
// The core library (libdreambooth.a) is CPU-only and includes no CUDA header. The CUDA backend's objects
// (src/backend/cuda/, kernels/) are linked straight into the binaries that have it: build/dreambooth when
// nvcc is found, and build/emu/dreambooth, the same backend on the CUDA emulator (a test build). They
// define linked_cuda_backend(); in a binary without them that weak symbol is null.
//
// --device auto: the CUDA backend when it is linked and sees a device, else the CPU; a CUDA build that
// finds no usable device says so once per process ("no usable CUDA device (...); running on the CPU").
// --device cuda: an error naming the reason when that is not possible. --device cpu: the CPU reference.
#include <memory>
#include <string>

#include "dreambooth/backend/ops.h"

namespace db {

enum class BackendKind { CPU, CUDA };

// What a linked CUDA backend provides (src/backend/cuda/cuda_backend.cpp).
struct CudaBackend {
  bool emulated = false;   // the CUDA emulator (build/emu/dreambooth): a test tool, slow
  const char* build = "";  // e.g. "sm_80, sm_90a" or "emulated on the CPU"
  int (*device_count)(std::string* status) = nullptr;  // usable devices, or 0 and the reason
  std::unique_ptr<Ops> (*make_ops)(int device) = nullptr;
  // Toolchain self-check on device 0 (a Philox stream drawn on the device equals the CPU's); false and
  // a reason in `report` when it differs or fails.
  bool (*self_check)(std::string* report) = nullptr;
  // Lets each of the two devices reach the other's memory directly when the hardware can (peer DMA for
  // copies between them); false when it cannot (copies are then staged through the host by the driver).
  bool (*enable_peer_access)(int a, int b) = nullptr;
};
const CudaBackend* linked_cuda_backend() __attribute__((weak));

struct DeviceInfo {
  bool cuda_compiled = false;  // a CUDA backend is linked into this binary
  bool cuda_emulated = false;  // ... and it is the emulator
  int cuda_devices = 0;        // usable CUDA devices seen by the runtime
  std::string cuda_status;     // why there are none, or the device names
};

DeviceInfo probe_devices();
// requested: "auto" (CUDA when usable, else CPU with a note), "cpu", or "cuda" (error when unusable).
BackendKind select_backend(const std::string& requested = "auto");
const char* backend_name(BackendKind k);
// The backend for `device` ("auto", "cpu" or "cuda", as select_backend). A CUDA backend uses the device
// local_rank % devices, the local rank read from Open MPI's, Slurm's or MPICH's environment (0 if none).
std::unique_ptr<Ops> make_ops(const std::string& device = "auto");

// A GPU pair for one rank (train --gpus-per-rank 2): CUDA backends on devices 2 * local_rank and
// 2 * local_rank + 1, peer access enabled between them when possible (*peer says whether). A UsageError
// (exit 2) when `device` selects the CPU or the node has too few devices.
struct OpsPair {
  std::unique_ptr<Ops> first, second;
  int first_device = 0, second_device = 1;
  bool peer = false;
};
OpsPair make_ops_pair(const std::string& device);

}  // namespace db
