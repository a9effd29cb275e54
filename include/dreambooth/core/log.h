#pragma once
// Logging to stderr: "[rank R] level: message". The rank prefix appears once a world is set up.
#include <string>

#include "dreambooth/core/error.h"

namespace db {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_log_rank(int rank, int world_size);  // prefix "[rank R/N] " when world_size > 1
void set_log_level(LogLevel level);
void log_message(LogLevel level, const std::string& msg);

template <typename... Args>
void log_info(const Args&... args) {
  log_message(LogLevel::Info, str_cat(args...));
}
template <typename... Args>
void log_warn(const Args&... args) {
  log_message(LogLevel::Warn, str_cat(args...));
}
template <typename... Args>
void log_debug(const Args&... args) {
  log_message(LogLevel::Debug, str_cat(args...));
}

}  // namespace db
