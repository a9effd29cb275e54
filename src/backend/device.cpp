#include "dreambooth/backend/device.h"

#include <mutex>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"

namespace db {

DeviceInfo probe_devices() {
  DeviceInfo info;
#if DB_HAVE_CUDA
  info.cuda_compiled = true;
  info.cuda_devices = cuda_device_count(&info.cuda_status);
#else
  info.cuda_status = "this build has no CUDA backend (nvcc was not found, or CUDA=0)";
#endif
  return info;
}

const char* backend_name(BackendKind k) {
  return k == BackendKind::CUDA ? "cuda" : "cpu";
}

BackendKind select_backend(const std::string& requested) {
  if (requested == "cpu") return BackendKind::CPU;
  DB_CHECK(requested == "auto" || requested == "cuda", "unknown device '", requested,
           "' (expected auto, cpu or cuda)");
  DeviceInfo info = probe_devices();
  if (info.cuda_devices > 0) return BackendKind::CUDA;
  if (requested == "cuda") throw Error("--device cuda: no usable CUDA device: ", info.cuda_status);
  if (info.cuda_compiled) {
    static std::once_flag once;
    std::call_once(once, [&] {
      log_warn("CUDA backend compiled but unusable (", info.cuda_status, "); running on the CPU");
    });
  }
  return BackendKind::CPU;
}

std::unique_ptr<Ops> make_ops(const std::string& device) {
  // This version's only backend is the CPU reference (CudaOps is not built yet), so nothing is probed:
  // auto means the CPU without a note, and cuda is refused.
  DB_CHECK(device == "auto" || device == "cpu" || device == "cuda", "unknown device '", device,
           "' (expected auto, cpu or cuda)");
  if (device == "cuda") throw Error("--device cuda: this version has no CUDA backend yet; use --device cpu");
  return std::make_unique<CpuOps>();
}

}  // namespace db
