#!/usr/bin/env bash
# train --gpus-per-rank 2 under mpirun -np 2 on the emulated CUDA binary (each rank sees four emulated
# devices, DB_EMU_DEVICES=4; local rank r takes devices 2r and 2r+1). The pair reduces the UNet's
# gradients over one communicator (the ranks' first devices) and the text encoder's over a second (their
# second devices), as NCCL needs one communicator per device. Against -np 2 with one GPU per rank, 3 steps:
#   - (peer access off, DB_EMU_PEER=0) per-step losses and grad norms bit-identical, and the weights (2 ranks: a + b in any bucketing);
#   - --shard-optimizer on the pairs (each model's moments sharded on its own device), stopped at step 2
#     (checkpoint: the moments gathered over both communicators) and resumed to 3: the same weights
#     (max abs 0: AdamW is elementwise; only the norm's f64 sum is split differently, so the grad norms
#     may differ in the last bits).
# Usage: tests/mpi/train_gpu_pair_np2.sh BUILD_DIR (skipped without BUILD_DIR/emu/dreambooth)
set -uo pipefail
emu="$1/emu/dreambooth"
if [ ! -x "$emu" ]; then
  echo "SKIPPED: $emu not built (needs the CUDA toolkit headers)"
  exit 0
fi
# Peer access off: a kernel of one device touching the other's memory (a tensor handed to the wrong
# backend) is then an error, not a silent success.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 DB_EMU_DEVICES=4 DB_EMU_PEER=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_pair_np2.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
t0=$(date +%s)
# shellcheck source=tests/mpi/tiny_data.bash
source tests/mpi/tiny_data.bash
tiny_data "$emu" "$tmp" || fail "init-model / prepare"
np2() {  # NAME ARGS...
  local name=$1
  shift
  timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -x DB_EMU_DEVICES -x DB_EMU_PEER \
    -np 2 "$emu" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class.h5" \
    --lr 1e-4 --seed 11 --progress-seconds 0 --device cuda --bucket-mb 0.05 --out "$tmp/$name" "$@" \
    > /dev/null 2> "$tmp/$name.log" || { tail -n 20 "$tmp/$name.log"; fail "mpirun -np 2 train $name"; }
}
np2 one --max-steps 3 --checkpoint-every 0
np2 pair --max-steps 3 --checkpoint-every 0 --gpus-per-rank 2
grep -q "UNet on CUDA device 0, text encoder on 1" "$tmp/pair.log" || { cat "$tmp/pair.log"; fail "placement"; }
np2 shard --max-steps 2 --checkpoint-every 2 --gpus-per-rank 2 --shard-optimizer
np2 shard --max-steps 3 --checkpoint-every 2 --gpus-per-rank 2 --shard-optimizer --resume latest

m=metrics.jsonl
jq -n -e --slurpfile a "$tmp/one/$m" --slurpfile b "$tmp/pair/$m" \
  '($a | length) == 3 and ($b | length) == 3 and
   ([range(0; 3) | $a[.].loss == $b[.].loss and $a[.].grad_norm == $b[.].grad_norm] | all)' > /dev/null ||
  fail "pairs differ from one GPU per rank: $(jq -c '[.loss, .grad_norm]' "$tmp/one/$m" | tr '\n' ' ') vs \
$(jq -c '[.loss, .grad_norm]' "$tmp/pair/$m" | tr '\n' ' ')"
jq -n -e --slurpfile a "$tmp/one/$m" --slurpfile b "$tmp/shard/$m" \
  '($b | length) == 3 and ([range(0; 3) | $a[.].loss == $b[.].loss] | all)' > /dev/null ||
  fail "sharded pairs: losses $(jq -c .loss "$tmp/shard/$m" | tr '\n' ' ') vs $(jq -c .loss "$tmp/one/$m" | tr '\n' ' ')"
for k in pair shard; do
  "$emu" compare "$tmp/one" "$tmp/$k" --json > "$tmp/cmp.json" 2> "$tmp/cmp.err"
  jq -e '[.components[].max_abs] | max == 0' "$tmp/cmp.json" > /dev/null ||
    fail "$k weights differ from one GPU per rank: $(head -c 400 "$tmp/cmp.json")"
done
echo "mpirun -np 2 --gpus-per-rank 2 (emulated): OK ($(( $(date +%s) - t0 )) s)"
