#pragma once
// Which backend runs the math, and the one factory every pipeline gets its backend from. A CUDA build on
// a machine without a usable GPU falls back to the CPU with one clear line (printed once per process).
#include <memory>
#include <string>

#include "dreambooth/backend/ops.h"

namespace db {

enum class BackendKind { CPU, CUDA };

struct DeviceInfo {
  bool cuda_compiled = false;  // built with nvcc (DB_HAVE_CUDA)
  int cuda_devices = 0;        // usable CUDA devices seen by the runtime
  std::string cuda_status;     // why there are none, or the device names
};

DeviceInfo probe_devices();
// requested: "auto" (CUDA when usable, else CPU with a note), "cpu", or "cuda" (error when unusable).
BackendKind select_backend(const std::string& requested = "auto");
const char* backend_name(BackendKind k);
// The backend for `device` ("auto", "cpu" or "cuda", as select_backend).
std::unique_ptr<Ops> make_ops(const std::string& device = "auto");

// Implemented in src/backend/cuda/ when built with CUDA: device count, or 0 and the reason.
int cuda_device_count(std::string* status);

}  // namespace db
