#!/usr/bin/env bash
# The test command (README: `make test`): the GoogleTest suite, the emulated kernel suite
# (tests/run_kernel_tests.sh), the command-line tests in tests/cli/, then the tests that need several
# MPI ranks. Prints one summary line; exits non-zero on any failure.
# Usage: tests/run_tests.sh [BUILD_DIR]
set -uo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
# OpenMP threads that spin-wait steal the cores the pthread OpenBLAS needs (2-3x slower when shared).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# Tests that want the real subject photos find them beside the clone (they skip visibly otherwise).
if [ -z "${DREAMBOOTH_SHARED_DATA:-}" ] && [ -d ../shared/data/dreambooth ]; then
  export DREAMBOOTH_SHARED_DATA=$(cd ../shared/data/dreambooth && pwd)
fi
passed=0; failed=0; failed_names=()
run() {  # NAME COMMAND...
  local name=$1; shift
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$name"); fi
}

run "googletest" "$build/dreambooth_tests" --gtest_color=no
run "kernels (emulated)" tests/run_kernel_tests.sh "$build"  # kernels/*.cu on the CPU emulator, ~1 s
for t in tests/cli/*.sh; do run "$t" "$t" "$build"; done
for t in tests/mpi/*.sh; do run "$t" "$t" "$build"; done  # mpirun -np 2 each, < 30 s

echo
[ $failed -eq 0 ] || echo "failed suites: ${failed_names[*]}"
echo "test suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
