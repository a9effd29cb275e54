#!/usr/bin/env bash
# The CPU build under AddressSanitizer + UndefinedBehaviorSanitizer (`make SANITIZE=1`, build-asan/; CI
# runs this after `make test`): the whole GoogleTest suite, then the command-line scripts that drive the
# error paths (bad options, hostile files, mismatched shards, a full disk). Any sanitizer report fails:
# reports exit with 86 (so a case that expects exit 1 cannot pass on one) and every log is searched for
# them as well. Usage: tests/run_sanitized_tests.sh [BUILD_DIR]
set -uo pipefail
build=${1:-build-asan}
cd "$(dirname "$0")/.."
# Leak checking is off: Open MPI leaves ~120 KB at MPI_Finalize in components it has dlclose'd, whose
# frames LeakSanitizer shows as "<unknown module>" and no suppression can name (every command runs
# in an MPI world). Memory errors and undefined behaviour are checked.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:exitcode=86}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
if [ -z "${DREAMBOOTH_SHARED_DATA:-}" ] && [ -d ../shared/data/dreambooth ]; then
  export DREAMBOOTH_SHARED_DATA=$(cd ../shared/data/dreambooth && pwd)
fi
logs=$(mktemp -d "${TMPDIR:-/tmp}/db_sanitized.XXXXXX")
trap 'rm -rf "$logs"' EXIT
passed=0; failed=0; failed_names=()

run() {  # NAME COMMAND...
  local name=$1 log="$logs/$((passed + failed)).log" ok=1 t0=$SECONDS; shift
  echo "=== $name (ASan+UBSan)"
  "$@" > "$log" 2>&1 || ok=0
  tail -n 3 "$log"
  if grep -qE "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"; then
    ok=0
    grep -m 5 -A 12 -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:" "$log"
  fi
  # Skips: only the tests that need ../shared may skip, as in tests/run_tests.sh.
  if grep -E "^\[  SKIPPED \]|^SKIPPED" "$log" | grep -v "needs ../shared" | grep -q .; then
    grep -B 3 -E "^\[  SKIPPED \]|^SKIPPED" "$log" | head -n 20
  fi
  echo "    ($((SECONDS - t0)) s)"
  if [ $ok -eq 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failed_names+=("$name"); fi
}

run "googletest" "$build/dreambooth_tests" --gtest_color=no
for t in tests/cli/option_validation.sh tests/cli/hostile_files.sh tests/cli/shard_model_checks.sh \
  tests/cli/prepare_full_disk.sh; do
  run "$t" "$t" "$build"
done

[ $failed -eq 0 ] || echo "failed under the sanitizers: ${failed_names[*]}"
echo "sanitized suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
