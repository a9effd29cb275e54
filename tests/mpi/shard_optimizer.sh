#!/usr/bin/env bash
# --shard-optimizer (ZeRO-1) under mpirun -np 2 (run by tests/run_tests.sh; usage: tests/mpi/shard_optimizer.sh BUILD_DIR):
# 1. CPU binary: -np 2 sharded == -np 2 unsharded. Both sum the same two per-rank gradients (a + b is
#    exact-order for 2 ranks whether MPI all-reduces or reduce-scatters), AdamW is elementwise, and only
#    the gradient norm's f64 sum is split differently (owned ranges, then all-reduced): max abs <= 1e-6
#    over every weight (measured 0). The unsharded run reduces everything after backward (--bucket-mb
#    0, no overlap); the sharded run uses tiny buckets (--bucket-mb 0.05) so spans
#    where one rank owns nothing and spans cut by a shard boundary are reduce-scattered too, and with
#    DREAMBOOTH_MPI_WINDOW=1000 (MPI calls cut into windows of 1000 elements, as buffers over
#    INT_MAX / 16 elements are: an SD UNet gradient is 860 M) so the windowing is exercised. The
#    step-2 checkpoint's optimizer.safetensors (moments gathered from both ranks) must equal the
#    unsharded one byte for byte (the moments are elementwise too).
# 2. The sharded checkpoint resumes on 1 rank (--batch-size 2: the same global batch) and gives the same
#    weights as resuming the unsharded checkpoint (max abs <= 1e-6; measured 0): a part of a moment
#    lost or misplaced when gathering would change the steps after the resume by ~lr.
#    And it resumes sharded on 2 ranks (each rank loading its own range of the full moments) to the
#    same weights as the uninterrupted sharded run (max abs <= 1e-6; measured 0).
# 3. The emulated CUDA binary (build/emu/dreambooth --device cuda: bf16 working weights, so the f32
#    master is sharded too; device tensors staged through the host by the MPI Communicator), 4 steps:
#    -np 2 sharded == -np 2 unsharded, max abs <= 1e-6 (expect 0: AdamW is elementwise and writes the
#    same bf16 working values whichever rank computes them; only the norm's f64 sum is split). The
#    step-2 checkpoint (masters gathered from the ranks, and moments) is byte-identical to the unsharded
#    one; it resumes sharded on 2 ranks to the uninterrupted sharded run's weights and on 1 rank to the
#    same weights as the unsharded checkpoint (max abs <= 1e-6; expect 0). Skipped when BUILD_DIR has no
#    emu/dreambooth.
set -uo pipefail
build=$1
bin="$build/dreambooth"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_shard.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
np2() { timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -np 2 "$@"; }
# max |a - b| over every tensor of two pipeline folders (compare exits 1 when they differ at all).
max_abs() {
  local rc=0
  "$bin" compare "$1" "$2" --json > "$tmp/cmp.json" || rc=$?
  [ $rc -le 1 ] && jq -e -s 'length == 1 and (.[0].tensors | length) > 0' "$tmp/cmp.json" > /dev/null ||
    fail "compare $1 $2: exit $rc, no report"
  jq '[.tensors[] | .max_abs] | max' "$tmp/cmp.json"
}
within() { jq -n -e --argjson v "$1" "\$v <= $2" > /dev/null; }

# shellcheck source=tests/mpi/tiny_data.bash
source tests/mpi/tiny_data.bash
tiny_data "$bin" "$tmp" || fail "init-model / prepare"
args=(train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class.h5"
  --lr 1e-4 --seed 11 --progress-seconds 0)

# 1. CPU: sharded vs unsharded
t0=$(date +%s)
np2 "$bin" "${args[@]}" --max-steps 4 --batch-size 1 --checkpoint-every 2 --bucket-mb 0 --out "$tmp/u" > /dev/null \
  2> "$tmp/u.log" ||
  { cat "$tmp/u.log"; fail "mpirun -np 2 train"; }
DREAMBOOTH_MPI_WINDOW=1000 np2 -x DREAMBOOTH_MPI_WINDOW "$bin" "${args[@]}" --max-steps 4 --batch-size 1 \
  --checkpoint-every 2 --shard-optimizer --bucket-mb 0.05 \
  --out "$tmp/s" > /dev/null 2> "$tmp/s.log" || { cat "$tmp/s.log"; fail "mpirun -np 2 train --shard-optimizer"; }
grep -q 'shard-optimizer: AdamW moments split over 2 ranks' "$tmp/s.log" || { cat "$tmp/s.log"; fail "no sharding logged"; }
grep 'saved on rank 0' "$tmp/s.log" | sed 's/^/  /'
d=$(max_abs "$tmp/s" "$tmp/u")
echo "CPU -np 2 sharded vs unsharded: max abs $d (limit 1e-6; $(( $(date +%s) - t0 )) s)"
within "$d" 1e-6 || fail "sharded weights differ from unsharded: max abs $d"
cmp -s "$tmp/s/checkpoint-2/optimizer.safetensors" "$tmp/u/checkpoint-2/optimizer.safetensors" ||
  fail "the sharded checkpoint's optimizer.safetensors differs from the unsharded one"

# 2. the sharded checkpoint resumes on 1 rank
for k in s u; do
  mkdir -p "$tmp/r$k" && cp -r "$tmp/$k/checkpoint-2" "$tmp/r$k/"
  "$bin" "${args[@]}" --max-steps 4 --batch-size 2 --checkpoint-every 0 --resume latest --out "$tmp/r$k" > /dev/null \
    2> "$tmp/r$k.log" || { cat "$tmp/r$k.log"; fail "resume of the $k checkpoint on 1 rank"; }
  grep -q 'resumed from' "$tmp/r$k.log" || fail "did not resume ($k)"
done
d=$(max_abs "$tmp/rs" "$tmp/ru")
echo "1-rank resume of the sharded vs the unsharded checkpoint: max abs $d (limit 1e-6)"
within "$d" 1e-6 || fail "resuming the sharded checkpoint differs: max abs $d"

mkdir -p "$tmp/r2" && cp -r "$tmp/s/checkpoint-2" "$tmp/r2/"
np2 "$bin" "${args[@]}" --max-steps 4 --batch-size 1 --checkpoint-every 0 --shard-optimizer --resume latest \
  --out "$tmp/r2" > /dev/null 2> "$tmp/r2.log" || { cat "$tmp/r2.log"; fail "sharded resume on 2 ranks"; }
d=$(max_abs "$tmp/r2" "$tmp/s")
echo "2-rank sharded resume vs the uninterrupted sharded run: max abs $d (limit 1e-6)"
within "$d" 1e-6 || fail "resuming sharded on 2 ranks differs: max abs $d"

# 3. the emulated CUDA binary: bf16 working weights, sharded f32 masters
emu="$build/emu/dreambooth"
if [ -x "$emu" ]; then
  t0=$(date +%s)
  eargs=("${args[@]}" --device cuda --max-steps 4 --batch-size 1 --checkpoint-every 2)
  np2 "$emu" "${eargs[@]}" --out "$tmp/eu" > /dev/null 2> "$tmp/eu.log" || { cat "$tmp/eu.log"; fail "emulated -np 2"; }
  np2 "$emu" "${eargs[@]}" --shard-optimizer --bucket-mb 0.05 --out "$tmp/es" > /dev/null 2> "$tmp/es.log" ||
    { cat "$tmp/es.log"; fail "emulated -np 2 --shard-optimizer"; }
  grep -q 'AdamW moments and f32 master weights split over 2 ranks' "$tmp/es.log" ||
    { cat "$tmp/es.log"; fail "emulated: no sharded masters logged"; }
  grep 'saved on rank 0' "$tmp/es.log" | sed 's/^/  /'
  d=$(max_abs "$tmp/es" "$tmp/eu")
  echo "emulated CUDA -np 2 sharded vs unsharded: max abs $d (limit 1e-6; $(( $(date +%s) - t0 )) s)"
  within "$d" 1e-6 || fail "emulated sharded weights differ from unsharded: max abs $d"
  for f in unet/diffusion_pytorch_model.safetensors text_encoder/model.safetensors optimizer.safetensors; do
    cmp -s "$tmp/es/checkpoint-2/$f" "$tmp/eu/checkpoint-2/$f" ||
      fail "emulated: the sharded checkpoint's $f differs from the unsharded one"
  done
  for k in es eu; do
    mkdir -p "$tmp/r1$k" && cp -r "$tmp/$k/checkpoint-2" "$tmp/r1$k/"
    "$emu" "${args[@]}" --device cuda --max-steps 4 --batch-size 2 --checkpoint-every 0 --resume latest \
      --out "$tmp/r1$k" > /dev/null 2> "$tmp/r1$k.log" || { cat "$tmp/r1$k.log"; fail "emulated 1-rank resume ($k)"; }
  done
  d=$(max_abs "$tmp/r1es" "$tmp/r1eu")
  echo "emulated 1-rank resume of the sharded vs the unsharded checkpoint: max abs $d (limit 1e-6)"
  within "$d" 1e-6 || fail "emulated: resuming the sharded checkpoint on 1 rank differs: max abs $d"
  mkdir -p "$tmp/r2e" && cp -r "$tmp/es/checkpoint-2" "$tmp/r2e/"
  np2 "$emu" "${eargs[@]}" --shard-optimizer --resume latest --out "$tmp/r2e" > /dev/null \
    2> "$tmp/r2e.log" || { cat "$tmp/r2e.log"; fail "emulated sharded resume on 2 ranks"; }
  d=$(max_abs "$tmp/r2e" "$tmp/es")
  echo "emulated 2-rank sharded resume vs the uninterrupted sharded run: max abs $d (limit 1e-6; $(( $(date +%s) - t0 )) s in all)"
  within "$d" 1e-6 || fail "emulated: resuming sharded on 2 ranks differs: max abs $d"
else
  echo "no $emu: emulated sharding not checked"
fi
echo "--shard-optimizer under mpirun -np 2: OK"
