#include "dreambooth/core/log.h"

#include <cstdio>
#include <mutex>
#include <unistd.h>
#include <string>

namespace db {
namespace {
int g_rank = 0, g_world = 1;
LogLevel g_level = LogLevel::Info;
std::mutex g_mu;
}  // namespace

void set_log_rank(int rank, int world_size) {
  g_rank = rank;
  g_world = world_size;
}
void set_log_level(LogLevel level) {
  g_level = level;
}

void log_message(LogLevel level, const std::string& msg) {
  if (level < g_level) return;
  static const char* names[] = {"debug", "info", "warning", "error"};
  // One write per line: stderr is unbuffered, and ranks sharing a terminal or log file would otherwise
  // interleave a prefix of one rank with the message of another.
  std::string line;
  if (g_world > 1) line = "[rank " + std::to_string(g_rank) + "/" + std::to_string(g_world) + "] ";
  if (level != LogLevel::Info) line += std::string(names[int(level)]) + ": ";
  line += msg;
  line += '\n';
  std::lock_guard<std::mutex> lock(g_mu);
  std::fflush(stderr);  // anything printed with stdio before goes first
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;  // nowhere to report a failing stderr
    done += size_t(n);
  }
}

}  // namespace db
