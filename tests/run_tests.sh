#!/usr/bin/env bash
# The test command (README: `make test`): the GoogleTest suite, the emulated kernel suite
# (tests/run_kernel_tests.sh), the command-line tests in tests/cli/, then the tests that need several
# MPI ranks. Prints one summary line; exits non-zero on any failure.
#
# Skips: only a test that needs the real photos of ../shared may skip (its message says "needs ../shared",
# see tests/unit/test_helpers.h); every skip is listed at the end, and any other skip (a GoogleTest skip,
# or a script's "SKIPPED" line) fails its suite: a test whose data or tool is missing must not pass.
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
logs=$(mktemp -d "${TMPDIR:-/tmp}/db_run_tests.XXXXXX")
trap 'rm -rf "$logs"' EXIT
passed=0; failed=0; failed_names=(); allowed_skips=(); bad_skips=()

# skips_in LOG: one line per skip, "NAME<TAB>MESSAGE": GoogleTest's "[  SKIPPED ] Suite.Test (N ms)" with
# the message printed after "file:line: Skipped", and scripts' "SKIPPED..." lines.
skips_in() {
  awk '
    /^\[ RUN      \] / { test = $4; msg = ""; in_msg = 0; next }
    /: Skipped$/ { in_msg = 1; next }
    /^\[  SKIPPED \] .* \([0-9]+ ms\)$/ { print $4 "\t" msg; in_msg = 0; next }
    /^\[/ { in_msg = 0 }
    in_msg && NF { msg = msg (msg == "" ? "" : " ") $0 }
    /^SKIPPED/ { print "(script)\t" $0 }
  ' "$1"
}

run() {  # NAME COMMAND...
  local name=$1 log="$logs/$((passed + failed)).log" ok=1 test msg; shift
  echo "=== $name"
  "$@" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || ok=0
  while IFS=$'\t' read -r test msg; do
    if [[ "$msg" == *"needs ../shared"* ]]; then
      allowed_skips+=("$name: $test: $msg")
    else
      bad_skips+=("$name: $test: $msg"); ok=0
    fi
  done < <(skips_in "$log")
  if [ $ok -eq 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$name"); fi
}

run "googletest" "$build/dreambooth_tests" --gtest_color=no
run "kernels (emulated)" tests/run_kernel_tests.sh "$build"  # kernels/*.cu on the CPU emulator
# cuBLASLt/cuDNN descriptors (no GPU needed; built when the CUDA toolkit is, CUDA=1).
[ -x "$build/cuda_host_tests" ] && run "cuda descriptors" "$build/cuda_host_tests" --gtest_color=no
# CudaOps against CpuOps, op by op and over whole training steps, on the emulator (tests/cuda/).
if [ -x "$build/emu/cuda_tests" ]; then
  run "cuda backend (emulated)" "$build/emu/cuda_tests" --gtest_color=no
else
  run "cuda backend (emulated)" echo "SKIPPED: $build/emu/cuda_tests not built (needs the CUDA toolkit headers)"
fi
# bench/cuda/kernels.cpp on the emulator at tiny shapes: every kernel launcher still builds and runs (< 10 s).
if [ -x "$build/emu/bench_kernels" ]; then
  run "bench_kernels --smoke (emulated)" "$build/emu/bench_kernels" --smoke --json "$logs/bench_kernels.json"
else
  run "bench_kernels --smoke (emulated)" echo "SKIPPED: $build/emu/bench_kernels not built (needs the CUDA toolkit headers)"
fi
for t in tests/cli/*.sh; do run "$t" "$t" "$build"; done
for t in tests/mpi/*.sh; do run "$t" "$t" "$build"; done  # mpirun -np 2 each, < 30 s

echo
if [ ${#allowed_skips[@]} -gt 0 ]; then
  echo "skipped (no ../shared here; allowed):"
  printf '  %s\n' "${allowed_skips[@]}"
fi
if [ ${#bad_skips[@]} -gt 0 ]; then
  echo "skipped WITHOUT an allowed reason (only tests that need ../shared may skip; these count as failures):"
  printf '  %s\n' "${bad_skips[@]}"
fi
[ $failed -eq 0 ] || echo "failed suites: ${failed_names[*]}"
echo "test suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
