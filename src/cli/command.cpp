#include "dreambooth/cli/command.h"

#include <iostream>

#include "dreambooth/core/error.h"

namespace db {

std::vector<Command>& command_table() {
  static std::vector<Command> table;
  return table;
}

bool register_command(Command c) {
  command_table().push_back(std::move(c));
  return true;
}

bool parse_command_line(int argc, char** argv, const std::string& usage, const std::string& description,
                        const po::options_description& options, po::variables_map& vm,
                        const po::positional_options_description* positional,
                        const po::options_description* hidden) {
  po::options_description all;
  all.add(options);
  if (hidden) all.add(*hidden);
  all.add_options()("help,h", "show this help");
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << "usage: " << usage << "\n\n"
                << description << "\n\n"
                << options << "  -h [ --help ]  show this help\n";
      return false;
    }
  }
  try {
    po::command_line_parser parser(argc, argv);  // skips argv[0], the subcommand name
    parser.options(all);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(argv[0]) + ": " + e.what() + " (see 'dreambooth " + argv[0] + " --help')");
  }
  return true;
}

}  // namespace db
