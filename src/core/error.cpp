#include "dreambooth/core/error.h"

namespace db {

std::vector<std::string>& error_context_stack() {
  thread_local std::vector<std::string> stack;
  return stack;
}

std::string current_error_context() {
  std::string out;
  for (const auto& c : error_context_stack()) out += c + ": ";
  return out;
}

}  // namespace db
