#!/usr/bin/env bash
# The test command: the GoogleTest suite, then the suites that need several MPI ranks.
# Usage: tests/run_tests.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
status=0
"$build/dreambooth_tests" --gtest_color=no || status=1

mpirun_np2() { mpirun --allow-run-as-root --oversubscribe -np 2 "$@"; }
fail() { echo "FAILED: $*" >&2; status=1; }

# prepare under mpirun -np 2: the two shards' union (by sha256 and pixels) equals the one-rank shard,
# and --strict with a bad file on rank 1 only leaves no shard from rank 0 either.
prepare_mpi() {
  local tmp model img
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_prepare_mpi.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  model=$tmp/model
  "$build/dreambooth" init-model --preset sd1-tiny --out "$model" > /dev/null || { fail "init-model"; return 1; }
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
  echo "prepare under mpirun -np 2: OK"
}
prepare_mpi || status=1

exit $status
