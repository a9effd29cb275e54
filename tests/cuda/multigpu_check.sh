#!/usr/bin/env bash
# Device check of issue 15 for a session lent GPUs (not part of `make test`: no GPU in CI).
# Usage: tests/cuda/multigpu_check.sh BUILD_DIR [OUT_DIR]   (BUILD_DIR from a CUDA=1 build)
#  1. bench_allreduce over the NCCL Communicator (DREAMBOOTH_COMM=nccl; one rank per GPU, a
#     communicator of size 1 on a single GPU): the collectives are verified against the expected
#     sums, then timed -> OUT_DIR/allreduce.json.
#  2. sd1-tiny training, --device cuda, NCCL: --shard-optimizer gives the same weights as unsharded
#     (max abs <= 1e-6; with one GPU sharding is a no-op and this only checks the run).
#  3. With >= 2 GPUs: step time with overlap (--bucket-mb 25: buckets reduced on the NCCL stream
#     while backward runs) and without (--bucket-mb 0: everything reduced after backward), each also
#     with --shard-optimizer, sd15 random weights at 256x256, 6 steps; mean step_time_s of the last 4
#     -> printed and OUT_DIR/overlap.txt.
#  4. With >= 2 GPUs: --gpus-per-rank 2 (UNet and text encoder on the two GPUs of a pair, NCCL over
#     one communicator per lane) on N/2 ranks vs N/2 ranks of one GPU each: sd1-tiny weights max abs
#     <= 1e-6 (the same kernels in the same order: bit-identical on the emulator); sd15 256x256 step
#     time of both -> OUT_DIR/pair.txt.
# DEVICE=cpu runs 1 and 2 on the CPU over MPI, 2 ranks, 16 MiB (to check this script without a GPU).
set -uo pipefail
b=$1
out=${2:-$(mktemp -d "${TMPDIR:-/tmp}/db_multigpu.XXXXXX")}
mkdir -p "$out"
dev=${DEVICE:-cuda}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
if [ "$dev" = cuda ]; then
  gpus=$(nvidia-smi -L 2> /dev/null | wc -l)
  export DREAMBOOTH_COMM=nccl
else
  gpus=2
  export DREAMBOOTH_COMM=mpi
fi
np=$(( gpus > 8 ? 8 : gpus ))
[ "$np" -ge 1 ] || { echo "FAILED: no GPU"; exit 1; }
fail() { echo "FAILED: $*"; exit 1; }
run() { timeout 300 mpirun --allow-run-as-root --oversubscribe --bind-to none -x DREAMBOOTH_COMM -x OMP_NUM_THREADS -np "$1" "${@:2}"; }
echo "multigpu check: $np rank(s), device $dev, communicator ${DREAMBOOTH_COMM:-mpi}, out $out"

run "$np" "$b/bench_allreduce" --device "$dev" --total-mb "$([ "$dev" = cuda ] && echo 1024 || echo 16)" --reps 5 --json "$out/allreduce.json" ||
  fail "bench_allreduce"

"$b/dreambooth" init-model --preset sd1-tiny --seed 5 --out "$out/tiny" > /dev/null 2>&1 || fail "init-model"
mkdir -p "$out/inst"
cp tests/fixtures/images/*.jpg "$out/inst/"
"$b/dreambooth" prepare --images "$out/inst" --prompt "photo of unqtkn dog" --model "$out/tiny" \
  --out "$out/inst.h5" --latents 2> /dev/null || fail "prepare"
args=(train --device "$dev" --instance-data "$out/inst.h5" --lr 1e-4 --seed 3 --progress-seconds 0
  --checkpoint-every 0 --batch-size 1)
run "$np" "$b/dreambooth" "${args[@]}" --model "$out/tiny" --max-steps 3 --out "$out/u" > /dev/null 2> "$out/u.log" ||
  { tail "$out/u.log"; fail "train"; }
run "$np" "$b/dreambooth" "${args[@]}" --model "$out/tiny" --max-steps 3 --shard-optimizer --bucket-mb 0.05 \
  --out "$out/s" > /dev/null 2> "$out/s.log" || { tail "$out/s.log"; fail "train --shard-optimizer"; }
grep -h "gradients over\|shard-optimizer" "$out/s.log"
rc=0; "$b/dreambooth" compare "$out/u" "$out/s" --json > "$out/cmp.json" || rc=$?
[ $rc -le 1 ] || fail "compare exit $rc"
d=$(jq '[.tensors[] | .max_abs] | max' "$out/cmp.json")
echo "sharded vs unsharded ($np ranks): max abs $d (limit 1e-6)"
jq -n -e --argjson d "$d" '$d <= 1e-6' > /dev/null || fail "sharded weights differ: $d"

if [ "$np" -ge 2 ] && [ "$dev" = cuda ]; then
  "$b/dreambooth" init-model --preset sd15 --seed 1 --out "$out/sd15" > /dev/null 2>&1 || fail "init-model sd15"
  "$b/dreambooth" prepare --images "$out/inst" --prompt "photo of unqtkn dog" --model "$out/sd15" \
    --resolution 256 --out "$out/inst256.h5" --latents 2> /dev/null || fail "prepare sd15"
  for shard in "" --shard-optimizer; do
    for mb in 25 0; do
      o="$out/o$mb${shard:+-shard}"
      run "$np" "$b/dreambooth" train --device "$dev" --model "$out/sd15" --instance-data "$out/inst256.h5" \
        --max-steps 6 --checkpoint-every 0 --progress-seconds 0 --bucket-mb $mb $shard --out "$o" \
        > /dev/null 2> "$o.log" || { tail "$o.log"; fail "sd15 --bucket-mb $mb $shard"; }
      echo "sd15 256x256, $np ranks, --bucket-mb $mb $shard: mean step" \
        "$(jq -s '[.[2:][] | .step_time_s] | add / length' "$o/metrics.jsonl") s" | tee -a "$out/overlap.txt"
    done
  done
fi
if [ "$np" -ge 2 ] && [ "$dev" = cuda ]; then
  pr=$(( np / 2 ))
  for g in 1 2; do
    run "$pr" "$b/dreambooth" "${args[@]}" --model "$out/tiny" --max-steps 3 --gpus-per-rank $g \
      --out "$out/pair$g" > /dev/null 2> "$out/pair$g.log" || { tail "$out/pair$g.log"; fail "train --gpus-per-rank $g"; }
  done
  rc=0; "$b/dreambooth" compare "$out/pair1" "$out/pair2" --json > "$out/cmp_pair.json" || rc=$?
  [ $rc -le 1 ] || fail "compare exit $rc"
  d=$(jq '[.tensors[] | .max_abs] | max' "$out/cmp_pair.json")
  echo "--gpus-per-rank 2 vs 1 ($pr ranks): max abs $d (limit 1e-6)"
  jq -n -e --argjson d "$d" '$d <= 1e-6' > /dev/null || fail "GPU-pair weights differ: $d"
  for g in 1 2; do
    o="$out/sd15pair$g"
    run "$pr" "$b/dreambooth" train --device "$dev" --model "$out/sd15" --instance-data "$out/inst256.h5" \
      --max-steps 6 --checkpoint-every 0 --progress-seconds 0 --gpus-per-rank $g --out "$o" \
      > /dev/null 2> "$o.log" || { tail "$o.log"; fail "sd15 --gpus-per-rank $g"; }
    echo "sd15 256x256, $pr ranks, --gpus-per-rank $g: mean step" \
      "$(jq -s '[.[2:][] | .step_time_s] | add / length' "$o/metrics.jsonl") s" | tee -a "$out/pair.txt"
  done
fi
echo "multigpu check: OK"
