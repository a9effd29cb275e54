#pragma once
// A graceful stop requested by a signal (Slurm's time limit, preemption, `scancel --signal`): SIGTERM and
// SIGUSR1 only set a flag (async-signal-safe); `train` polls it once per step, agrees on it over all
// ranks, writes a checkpoint and exits with kExitStopped. Other commands keep the default actions.
namespace db {

constexpr int kExitStopped = 3;  // "stopped by a signal, checkpoint written": resume with --resume auto

// Installs the SIGTERM and SIGUSR1 handlers (SA_RESTART, so interrupted file writes continue).
void install_stop_handlers();
// Restores the default actions and clears the flag.
void remove_stop_handlers();
bool stop_requested();
int stop_signal();  // the first signal received, 0 when none
// Sets the flag as a signal would (tests).
void request_stop(int signo);

}  // namespace db
