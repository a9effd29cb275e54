#!/usr/bin/env bash
# The test command (README: `make test`): the GoogleTest suite, the command-line tests in tests/cli/,
# then the tests that need several MPI ranks. Prints one summary line; exits non-zero on any failure.
# Usage: tests/run_tests.sh [BUILD_DIR]
set -uo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1  # CI runs as root
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
for t in tests/cli/*.sh; do run "$t" "$t" "$build"; done


mpirun_np2() { mpirun --allow-run-as-root --oversubscribe -np 2 "$@"; }


# prepare under mpirun -np 2: the two shards' union (by sha256 and pixels) equals the one-rank shard,
# and --strict with a bad file on rank 1 only leaves no shard from rank 0 either.
prepare_mpi() {
  local tmp model img status=0
  fail() { echo "FAILED: $*" >&2; status=1; }
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_prepare_mpi.XXXXXX")
  trap 'rm -rf "$tmp"; trap - RETURN' RETURN
  model=tests/golden/sd1-tiny/model
  img=$tmp/img
  mkdir -p "$img" "$tmp/union" "$tmp/strict/img"
  cp tests/fixtures/images/* "$img/"
  head -c 300 tests/fixtures/images/progressive_161x120.jpg > "$img/exif3_truncated.jpg"  # skipped
  echo "not an image" > "$img/notes.txt"
  local args=(prepare --prompt "photo of unqtkn dog" --model "$model" --resolution 32 --progress-every 8)
  "$build/dreambooth" "${args[@]}" --images "$img" --out "$tmp/union/single.h5" || fail "prepare (1 rank)"
  mpirun_np2 "$build/dreambooth" "${args[@]}" --images "$img" --out "$tmp/union/split.h5" ||
    fail "mpirun -np 2 prepare"
  DREAMBOOTH_PREPARE_UNION_DIR=$tmp/union "$build/dreambooth_tests" --gtest_color=no \
    --gtest_filter=Prepare.ShardUnionEqualsSingleRank || fail "Prepare.ShardUnionEqualsSingleRank"

  cp tests/fixtures/images/gray_77x99.jpg "$tmp/strict/img/a.jpg"          # rank 0
  head -c 300 tests/fixtures/images/rgb444_96x64.jpg > "$tmp/strict/img/b.jpg"  # rank 1: truncated
  cp tests/fixtures/images/rgb_37x91.png "$tmp/strict/img/c.png"           # rank 0
  if mpirun_np2 "$build/dreambooth" "${args[@]}" --strict --images "$tmp/strict/img" \
    --out "$tmp/strict/out.h5" 2> "$tmp/strict.log"; then
    fail "prepare --strict with a bad image on rank 1 succeeded"
  fi
  grep -q "b.jpg" "$tmp/strict.log" || fail "prepare --strict: the error does not name b.jpg"
  [ "$(grep -c '^\[rank [0-9]/2\] error:' "$tmp/strict.log")" = 1 ] || fail "prepare --strict: not exactly one error line"
  if ls "$tmp/strict" | grep -q '^out'; then fail "prepare --strict left files: $(ls "$tmp/strict")"; fi
  [ $status -eq 0 ] && echo "prepare under mpirun -np 2: OK"
  return $status
}
run "prepare under mpirun -np 2" prepare_mpi

# train under mpirun -np 2: data-parallel equivalence with one rank, and a failing / killed rank ends the
# job (tests/mpi/train_mpi.sh; ~30 s).
run "tests/mpi/train_mpi.sh" tests/mpi/train_mpi.sh "$build"

echo
[ $failed -eq 0 ] || echo "failed suites: ${failed_names[*]}"
echo "test suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
