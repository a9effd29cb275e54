#!/usr/bin/env bash
# `dreambooth prepare` under mpirun -np 2 (run by tests/run_tests.sh; usage: tests/mpi/prepare_np2.sh BUILD_DIR):
#  - the two shards' union (by sha256 and pixels) equals the one-rank shard, image i on rank i mod 2
#    (checked by the GoogleTest Prepare.ShardUnionEqualsSingleRank, given the folder);
#  - --strict with a bad image on rank 1 only fails with one error line naming it, and rank 0 leaves
#    no shard either.
set -uo pipefail
build=$1
status=0
fail() { echo "FAILED: $*" >&2; status=1; }
mpirun_np2() { mpirun --allow-run-as-root --oversubscribe -np 2 "$@"; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_prepare_mpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

model=$tmp/model
"$build/dreambooth" init-model --preset sd1-tiny --out "$model" > /dev/null || { echo "FAILED: init-model"; exit 1; }
img=$tmp/img
mkdir -p "$img" "$tmp/union" "$tmp/strict/img"
cp tests/fixtures/images/* "$img/"
head -c 300 tests/fixtures/images/progressive_161x120.jpg > "$img/exif3_truncated.jpg"  # skipped
echo "not an image" > "$img/notes.txt"                                                  # skipped
args=(prepare --prompt "photo of unqtkn dog" --model "$model" --resolution 32 --progress-every 8)
"$build/dreambooth" "${args[@]}" --images "$img" --out "$tmp/union/single.h5" || fail "prepare (1 rank)"
mpirun_np2 "$build/dreambooth" "${args[@]}" --images "$img" --out "$tmp/union/split.h5" ||
  fail "mpirun -np 2 prepare"
# The test exists only with DREAMBOOTH_PREPARE_UNION_DIR set; a filter that matches nothing passes in
# GoogleTest, so require that exactly this one test ran and passed.
DREAMBOOTH_PREPARE_UNION_DIR=$tmp/union "$build/dreambooth_tests" --gtest_color=no \
  --gtest_filter=Prepare.ShardUnionEqualsSingleRank > "$tmp/union.log" 2>&1 || fail "Prepare.ShardUnionEqualsSingleRank"
cat "$tmp/union.log"
grep -q '^\[==========\] 1 test from 1 test suite ran' "$tmp/union.log" && grep -q '^\[  PASSED  \] 1 test\.' "$tmp/union.log" ||
  fail "Prepare.ShardUnionEqualsSingleRank did not run exactly once"

cp tests/fixtures/images/gray_77x99.jpg "$tmp/strict/img/a.jpg"                  # rank 0
head -c 300 tests/fixtures/images/rgb444_96x64.jpg > "$tmp/strict/img/b.jpg"   # rank 1: truncated
cp tests/fixtures/images/rgb_37x91.png "$tmp/strict/img/c.png"                   # rank 0
if mpirun_np2 "$build/dreambooth" "${args[@]}" --strict --images "$tmp/strict/img" \
  --out "$tmp/strict/out.h5" 2> "$tmp/strict.log"; then
  fail "prepare --strict with a bad image on rank 1 succeeded"
fi
grep -q "b.jpg" "$tmp/strict.log" || fail "prepare --strict: the error does not name b.jpg"
[ "$(grep -c '^\[rank [0-9]/2\] error:' "$tmp/strict.log")" = 1 ] || { cat "$tmp/strict.log"; fail "prepare --strict: not exactly one error line"; }
if ls "$tmp/strict" | grep -q '^out'; then fail "prepare --strict left files: $(ls "$tmp/strict")"; fi
[ $status -eq 0 ] && echo "prepare under mpirun -np 2: OK"
exit $status
