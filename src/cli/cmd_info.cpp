// `dreambooth info`: what this build can do here: version, backends, devices, MPI.
#include <iostream>

#include "dreambooth/backend/device.h"
#include "dreambooth/cli/command.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/core/version.h"
#if DB_HAVE_CUDA
#include "dreambooth/backend/cuda/philox_kernel.h"
#endif
#include <vector>

namespace db {
namespace {

int run_info(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()("device", po::value<std::string>()->default_value("auto"),
                     "backend to select: auto, cpu, cuda");
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth info [--device auto|cpu|cuda]",
          "Prints the version, the compiled backends, the devices this machine offers and the\n"
          "backend a run would use.",
          opts, vm))
    return 0;
  DeviceInfo info = probe_devices();
  std::cout << "dreambooth " << kVersion << "\n"
            << "cuda backend: " << (info.cuda_compiled ? "compiled (sm_80, sm_90a)" : "not compiled") << "\n"
            << "cuda devices: " << info.cuda_devices << " (" << info.cuda_status << ")\n";
  BackendKind k = select_backend(vm["device"].as<std::string>());
  std::cout << "backend: " << backend_name(k) << "\n";
#if DB_HAVE_CUDA
  if (info.cuda_devices > 0) {
    // Self-check of the device toolchain: a Philox stream drawn on the GPU equals the CPU's.
    const uint64_t n = 4099;
    std::vector<uint32_t> gpu(n);
    std::string err;
    if (!cuda_philox_u32(1234, uint32_t(RngPurpose::Noise), 7, 3, gpu.data(), n, &err)) {
      std::cout << "cuda self-check: FAILED (" << err << ")\n";
      return 1;
    }
    PhiloxStream cpu(1234, RngPurpose::Noise, 7, 3);
    uint64_t bad = 0;
    for (uint64_t e = 0; e < n; ++e) bad += gpu[e] != cpu.u32(e);
    std::cout << "cuda self-check: Philox stream on device 0 " << (bad ? "DIFFERS from" : "equals")
              << " the CPU's (" << n - bad << "/" << n << " words)\n";
    if (bad) return 1;
  }
#endif
  return 0;
}

}  // namespace

DB_COMMAND(info, "info", "show the version, compiled backends and the devices found", run_info);

}  // namespace db
