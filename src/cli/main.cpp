// dreambooth: entry point. Dispatches to the registered subcommands; maps errors to exit codes:
// 0 success, 1 runtime error (one "error: ..." line), 2 bad command line (README "Exit status").
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/version.h"
#include "dreambooth/dist/world.h"

namespace {

void print_help() {
  auto cmds = db::command_table();
  std::sort(cmds.begin(), cmds.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::cout << "dreambooth: fine-tune Stable Diffusion on a few photos of one subject (DreamBooth).\n\n"
               "usage: dreambooth <command> [options]     (the same under mpirun or srun)\n\n"
               "commands:\n";
  for (const auto& c : cmds) std::printf("  %-12s %s\n", c.name.c_str(), c.summary.c_str());
  std::cout << "\n'dreambooth <command> --help' explains each command's options; 'dreambooth --version' "
               "prints the version.\n";
}

}  // namespace

int main(int argc, char** argv) {
  // A write past a file-size limit (ulimit -f, Slurm propagating the submit shell's) fails with EFBIG
  // and an error naming the file, instead of SIGXFSZ killing the rank without a word.
  std::signal(SIGXFSZ, SIG_IGN);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "version")) {
    std::printf("dreambooth %s\n", db::kVersion);
    return 0;
  }
  const auto& cmds = db::command_table();
  auto it = std::find_if(cmds.begin(), cmds.end(), [&](const auto& c) { return c.name == argv[1]; });
  if (it == cmds.end()) {
    std::fprintf(stderr, "dreambooth: unknown command '%s' (see 'dreambooth --help')\n", argv[1]);
    return 2;
  }
  // Every subcommand runs inside an MPI world (a singleton without mpirun). A failing rank prints its
  // own message once and aborts the job so no other rank waits forever in a collective.
  int code = 0;
  try {
    db::init_world(&argc, &argv);
    code = it->run(argc - 1, argv + 1);
  } catch (const db::UsageError& e) {
    if (db::world().is_root()) std::fprintf(stderr, "dreambooth %s\n", e.what());
    code = 2;
  } catch (const std::exception& e) {
    db::log_message(db::LogLevel::Error, e.what());
    if (db::world().size > 1) db::abort_world(1);
    code = 1;
  }
  db::finalize_world();
  return code;
}
