#!/usr/bin/env bash
# `dreambooth generate` under mpirun: 2 ranks must write the same files as 1 rank, byte for byte
# (every image PNG and manifest.jsonl), with an uneven split (7 images, batches of 2: ranks get batches
# 0,2 and 1,3). Then the CLI's error lines and exit codes. Usage: tests/cli/generate_mpi.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=tests/golden/sd1-tiny/model
args=(generate --model "$model" --prompt "a photo of a dog" --negative-prompt "blurry"
      --num-images 7 --batch-size 2 --steps 3 --scheduler euler_ancestral --seed 11 --quiet)
fails=0
# One OpenMP thread per rank: 2 ranks share the CI machine's cores (results are thread-count invariant).
OMP_NUM_THREADS=1 "$bin" "${args[@]}" --out "$tmp/np1" || { echo "FAIL: 1-rank generate"; exit 1; }
mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" "${args[@]}" --out "$tmp/np2" ||
  { echo "FAIL: 2-rank generate"; exit 1; }
n1=$(ls "$tmp/np1" | wc -l); n2=$(ls "$tmp/np2" | wc -l)
[ "$n1" -eq 8 ] && [ "$n2" -eq 8 ] || { echo "FAIL: expected 7 images + manifest, got $n1 and $n2 files"; fails=1; }
for f in "$tmp"/np1/*; do
  if cmp -s "$f" "$tmp/np2/$(basename "$f")"; then :; else echo "FAIL: $(basename "$f") differs between 1 and 2 ranks"; fails=1; fi
done
[ $fails -eq 0 ] && echo "ok   generate: 2 ranks wrote the same $n1 files as 1 rank (cmp)"

check() {  # NAME EXPECTED_EXIT EXPECTED_SUBSTRING ARGS...
  local name=$1 want_rc=$2 want=$3 out rc lines; shift 3
  # A CUDA build on a machine without a GPU first says it runs on the CPU (backend/device.h): not an error line.
  out=$(OMP_NUM_THREADS=1 "$bin" generate --prompt dog --quiet "$@" 2>&1 >/dev/null); rc=$?
  out=$(printf '%s\n' "$out" | grep -v '^warning: no usable CUDA device')
  lines=$(printf '%s\n' "$out" | grep -c .)
  if [ $rc -eq "$want_rc" ] && [ "$lines" -eq 1 ] && [[ "$out" == *"$want"* ]]; then
    echo "ok   $name: $out"
  else
    echo "FAIL $name: exit $rc (want $want_rc), $lines lines: $out"; fails=1
  fi
}
check unknown-scheduler 2 "unknown --scheduler 'heun' (valid: pndm," --model "$model" --out "$tmp/e" --scheduler heun
check steps-0 2 "--steps must be a positive number, got 0" --model "$model" --out "$tmp/e" --steps 0
check height-12 2 "--height must be divisible by 8" --model "$model" --out "$tmp/e" --height 12
touch "$tmp/file"
check unwritable 1 "cannot create the output folder" --model "$model" --out "$tmp/file/sub" --steps 1
check missing-model 1 "$tmp/nope" --out "$tmp/e" --model "$tmp/nope"
exit $fails
