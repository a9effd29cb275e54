#include "dreambooth/emu/violation.h"

#include <mutex>

namespace db::emu {
namespace {

std::mutex& mutex() {
  static std::mutex m;
  return m;
}
std::string& last() {
  static std::string s;
  return s;
}

}  // namespace

std::string last_violation() {
  std::lock_guard lock(mutex());
  return last();
}

void clear_last_violation() {
  std::lock_guard lock(mutex());
  last().clear();
}

namespace detail {
void set_last_violation(const std::string& message) {
  std::lock_guard lock(mutex());
  last() = message;
}
}  // namespace detail

}  // namespace db::emu
