#!/usr/bin/env bash
# A stopped peer (issue 16 item 8): under mpirun -np 2, rank 1 is stopped with SIGSTOP mid-run. Rank 0
# must not spin at 100% CPU (it polls a non-blocking collective and sleeps between polls: measured
# from /proc while it waits) and, after --collective-timeout 3 s, end the job (non-zero exit, well
# before the 60 s guard) with one message naming the collective and rank 1.
# Usage: tests/mpi/collective_timeout.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_coll_timeout.XXXXXX")
stopped=""
trap '[ -n "$stopped" ] && kill -KILL "$stopped" 2> /dev/null; [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
source tests/mpi/mpirun_under.bash

"$bin" init-model --preset sd1-tiny --seed 0 --out "$tmp/base" > /dev/null || fail "init-model"
"$bin" prepare --images jobs/data/dog --prompt "photo of unqtkn dog" --model "$tmp/base" \
  --out "$tmp/inst.h5" --latents 2> /dev/null || fail "prepare"

start=$(date +%s.%N)
timeout 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -np 2 \
  "$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --out "$tmp/out" --max-steps 1000 \
  --checkpoint-every 0 --progress-seconds 0 --collective-timeout 3 > "$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  [ -f "$tmp/out/metrics.jsonl" ] && [ "$(wc -l < "$tmp/out/metrics.jsonl")" -ge 2 ] && break
  sleep 0.1
done
mpirun_pid=$(mpirun_under "$pid")
ranks=($(ps -o pid= --ppid "$mpirun_pid" | tr -d ' '))
[ ${#ranks[@]} -eq 2 ] || fail "expected 2 ranks under mpirun, got '${ranks[*]}'"
kill -STOP "${ranks[1]}"
stopped=${ranks[1]}
t_stop=$(date +%s.%N)
# CPU seconds rank 0 uses while it waits (utime + stime, clock ticks), between 1 s and 2.5 s after the stop.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat" 2> /dev/null || echo 0; }
sleep 1
c0=$(cpu "${ranks[0]}")
sleep 1.5
c1=$(cpu "${ranks[0]}")
wait "$pid"; rc=$?
t_end=$(date +%s.%N)
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { cat "$tmp/log"; fail "exit $rc (124: still hanging after 60 s)"; }
msg=$(grep -c "did not complete within 3 s (--collective-timeout): rank(s) 1 did not arrive" "$tmp/log")
[ "$msg" = 1 ] || { cat "$tmp/log"; fail "expected the timeout message naming rank 1 once, got $msg"; }
waited=$(awk -v a="$t_end" -v b="$t_stop" 'BEGIN { printf "%.1f", a - b }')
busy=$(awk -v a="$c1" -v b="$c0" 'BEGIN { printf "%.2f", a - b }')
echo "stopped rank 1: job ended after $waited s (exit $rc), rank 0 used $busy CPU s in 1.5 s of waiting"
awk -v w="$waited" 'BEGIN { exit !(w < 20) }' || fail "took $waited s to end the job"
awk -v b="$busy" 'BEGIN { exit !(b < 0.25) }' || fail "rank 0 spun while waiting ($busy CPU s in 1.5 s)"
