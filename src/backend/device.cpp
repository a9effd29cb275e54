#include "dreambooth/backend/device.h"

#include <cstdlib>
#include <mutex>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"

namespace db {
namespace {

const CudaBackend* cuda_backend() {
  return linked_cuda_backend ? linked_cuda_backend() : nullptr;
}

// This process's index among the ranks of its node (one rank per GPU).
int local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"})
    if (const char* v = std::getenv(var)) return std::atoi(v);
  return 0;
}

}  // namespace

DeviceInfo probe_devices() {
  DeviceInfo info;
  const CudaBackend* b = cuda_backend();
  if (!b) {
    info.cuda_status = "this binary has no CUDA backend (nvcc was not found at build time, or CUDA=0)";
    return info;
  }
  info.cuda_compiled = true;
  info.cuda_emulated = b->emulated;
  info.cuda_devices = b->device_count(&info.cuda_status);
  return info;
}

const char* backend_name(BackendKind k) {
  return k == BackendKind::CUDA ? "cuda" : "cpu";
}

BackendKind select_backend(const std::string& requested) {
  DB_CHECK(requested == "auto" || requested == "cpu" || requested == "cuda", "unknown device '", requested,
           "' (expected auto, cpu or cuda)");
  if (requested == "cpu") return BackendKind::CPU;
  DeviceInfo info = probe_devices();
  if (info.cuda_devices > 0) {
    if (info.cuda_emulated) {
      static std::once_flag once;
      std::call_once(once, [] {
        log_warn(
            "running the CUDA backend on the CUDA emulator: a test build (build/emu/dreambooth), "
            "orders of magnitude slower than a GPU");
      });
    }
    return BackendKind::CUDA;
  }
  if (requested == "cuda") throw Error("--device cuda: no usable CUDA device: ", info.cuda_status);
  if (info.cuda_compiled) {
    static std::once_flag once;
    std::call_once(once,
                   [&] { log_warn("no usable CUDA device (", info.cuda_status, "); running on the CPU"); });
  }
  return BackendKind::CPU;
}

OpsPair make_ops_pair(const std::string& device) {
  if (device == "cpu" || select_backend(device) == BackendKind::CPU)
    throw UsageError(
        "--gpus-per-rank 2 places the UNet and the text encoder on two GPUs: it needs the CUDA "
        "backend (--device cuda or auto with CUDA devices), not the CPU");
  std::string status;
  const CudaBackend* b = cuda_backend();
  const int n = b->device_count(&status), r = local_rank();
  if (2 * r + 1 >= n)
    throw UsageError(str_cat("--gpus-per-rank 2: local rank ", r, " needs devices ", 2 * r, " and ",
                             2 * r + 1, " but this node has ", n, " CUDA device(s) (", status,
                             "); start at most ", n / 2, " rank(s) per node"));
  OpsPair p;
  p.first_device = 2 * r;
  p.second_device = 2 * r + 1;
  p.first = b->make_ops(p.first_device);
  p.second = b->make_ops(p.second_device);
  p.peer = b->enable_peer_access(p.first_device, p.second_device);
  return p;
}

std::unique_ptr<Ops> make_ops(const std::string& device) {
  if (select_backend(device) == BackendKind::CPU) return std::make_unique<CpuOps>();
  std::string status;
  const CudaBackend* b = cuda_backend();
  const int n = b->device_count(&status);
  return b->make_ops(local_rank() % n);
}

}  // namespace db
