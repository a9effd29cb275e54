#!/usr/bin/env bash
# --collective-timeout on the sharded path (--shard-optimizer): under mpirun -np 2, rank 1 stops itself
# (SIGSTOP, test hook DREAMBOOTH_STALL_AT) when it enters its first MPI_Reduce_scatter (a gradient
# bucket) and, in a second run, its first MPI_Allgatherv (the updated weights). Rank 0, waiting in that
# collective, must end the job after --collective-timeout 3 s (non-zero exit, well before the 60 s
# guard) with one message naming that collective and rank 1.
# Usage: tests/mpi/collective_timeout_shard.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_coll_timeout_shard.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }

"$bin" init-model --preset sd1-tiny --seed 0 --out "$tmp/base" > /dev/null 2>&1 || fail "init-model"
"$bin" prepare --images jobs/data/dog --prompt "photo of unqtkn dog" --model "$tmp/base" \
  --out "$tmp/inst.h5" --latents 2> /dev/null || fail "prepare"

for coll in MPI_Reduce_scatter MPI_Allgatherv; do
  start=$(date +%s.%N)
  timeout 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS \
    -x DREAMBOOTH_STALL_AT=1:$coll -np 2 "$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" \
    --out "$tmp/out-$coll" --max-steps 3 --checkpoint-every 0 --progress-seconds 0 --shard-optimizer \
    --bucket-mb 0.05 --collective-timeout 3 > "$tmp/log" 2>&1
  rc=$?
  t_end=$(date +%s.%N)
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$tmp/log"; fail "$coll: exit $rc (124: still hanging after 60 s)"; }
  msg=$(grep -c "$coll did not complete within 3 s (--collective-timeout): rank(s) 1 did not arrive" "$tmp/log")
  [ "$msg" = 1 ] || { cat "$tmp/log"; fail "$coll: expected the timeout message naming rank 1 once, got $msg"; }
  took=$(awk -v a="$t_end" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
  echo "rank 1 stopped in its first $coll: job ended after $took s (exit $rc), rank 1 named"
  awk -v w="$took" 'BEGIN { exit !(w < 30) }' || fail "$coll: took $took s to end the job"
done
