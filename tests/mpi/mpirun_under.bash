# Sourced by test scripts that signal mpirun or its ranks (tests/cli/train_signal.sh,
# tests/mpi/collective_timeout.sh); the caller defines fail().
# mpirun_under PID: the mpirun process at or below PID (a subshell and `timeout` may sit in between).
mpirun_under() {
  local p=$1
  for _ in 1 2 3 4; do
    [ "$(ps -o comm= -p "$p")" = mpirun ] && { echo "$p"; return; }
    p=$(ps -o pid= --ppid "$p" | head -n 1 | tr -d ' ')
    [ -n "$p" ] || break
  done
  fail "no mpirun below process $1"
}
