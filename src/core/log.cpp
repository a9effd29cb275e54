#include "dreambooth/core/log.h"

#include <cstdio>
#include <mutex>

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
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_world > 1) std::fprintf(stderr, "[rank %d/%d] ", g_rank, g_world);
  if (level == LogLevel::Info)
    std::fprintf(stderr, "%s\n", msg.c_str());
  else
    std::fprintf(stderr, "%s: %s\n", names[int(level)], msg.c_str());
  std::fflush(stderr);
}

}  // namespace db
