#pragma once
// Subcommands register themselves: one file per subcommand in src/cli/, each ending with
//
//   DB_COMMAND(init_model, "init-model", "write a random-init model in diffusers layout", run_init_model);
//
// src/cli/*.o are linked into the binary directly (not through the static library) so that these
// registrations are never dropped by the linker.
#include <functional>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace db {

struct Command {
  std::string name;
  std::string summary;
  std::function<int(int argc, char** argv)> run;  // argv[0] is the subcommand name
};

std::vector<Command>& command_table();
bool register_command(Command c);

namespace po = boost::program_options;

// The --device option of prepare, generate and train (backend/device.h make_ops).
inline constexpr const char* kDeviceHelp =
    "backend: auto | cpu | cuda (auto: an NVIDIA GPU when this binary has the CUDA backend and sees "
    "one, else the CPU; with several ranks per node, rank i uses GPU i % count)";

// Parses a subcommand's options. Handles --help (prints usage + options, returns false: exit 0).
// Unknown options, missing required ones and bad values throw UsageError (exit 2).
// `usage` is the first help line, e.g. "dreambooth tokenize --model DIR [options] TEXT...".
bool parse_command_line(int argc, char** argv, const std::string& usage, const std::string& description,
                        const po::options_description& options, po::variables_map& vm,
                        const po::positional_options_description* positional = nullptr,
                        const po::options_description* hidden = nullptr);

}  // namespace db

#define DB_COMMAND(id, name, summary, fn) \
  static const bool db_command_registered_##id = ::db::register_command({name, summary, fn})
