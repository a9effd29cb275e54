#include "dreambooth/core/stop_signal.h"

#include <csignal>

namespace db {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int signo) {
  if (g_signal == 0) g_signal = signo;
}

void set_action(int signo, void (*handler)(int)) {
  struct sigaction sa = {};
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(signo, &sa, nullptr);
}

}  // namespace

void install_stop_handlers() {
  set_action(SIGTERM, on_stop_signal);
  set_action(SIGUSR1, on_stop_signal);
}

void remove_stop_handlers() {
  set_action(SIGTERM, SIG_DFL);
  set_action(SIGUSR1, SIG_DFL);
  g_signal = 0;
}

bool stop_requested() {
  return g_signal != 0;
}

int stop_signal() {
  return g_signal;
}

void request_stop(int signo) {
  on_stop_signal(signo);
}

}  // namespace db
