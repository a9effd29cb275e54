// `dreambooth info`: what this build can do here: version, backends, devices, MPI.
#include <iostream>

#include "dreambooth/backend/device.h"
#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/version.h"

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
  const CudaBackend* cuda = linked_cuda_backend ? linked_cuda_backend() : nullptr;
  std::cout << "dreambooth " << kVersion << "\n"
            << "cuda backend: " << (cuda ? str_cat("linked (", cuda->build, ")") : "not linked") << "\n"
            << "cuda devices: " << info.cuda_devices << " (" << info.cuda_status << ")\n";
  BackendKind k = select_backend(vm["device"].as<std::string>());
  std::cout << "backend: " << backend_name(k) << "\n";
  if (cuda && info.cuda_devices > 0) {
    std::string report;
    const bool ok = cuda->self_check(&report);
    std::cout << "cuda self-check: " << report << "\n";
    if (!ok) return 1;
  }
  return 0;
}

}  // namespace

DB_COMMAND(info, "info", "show the version, compiled backends and the devices found", run_info);

}  // namespace db
