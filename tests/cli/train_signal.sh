#!/usr/bin/env bash
# A Slurm-style stop under `mpirun -np 2` (issue 16 item 1): a run is started, SIGTERM is sent to ONE
# rank's process mid-run (Slurm signals every task; one is the harder case: the ranks must agree), the
# job must finish the step in flight, write a checkpoint and exit 3 (README "Exit status") with no
# temporary folder and no lock left; `--resume auto` then finishes the run, and the final weights are
# bit-identical (`compare --tol 0`) to a straight run, with metrics.jsonl holding steps 1..N once each.
# Then the same with SIGUSR1 sent to mpirun itself (Open MPI 4.1 forwards SIGUSR1/SIGUSR2 to the
# ranks; SIGTERM to mpirun is NOT a graceful path: mpirun SIGKILLs the ranks about 1 s later). Also:
# `--resume auto` in an empty --out starts fresh.
# Conventions of train_bitident.sh: OpenMP/OpenBLAS pinned to 1 thread so the bits are reproducible.
# Usage: tests/cli/train_signal.sh BUILD_DIR
set -uo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bin="$1/dreambooth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_signal.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
source tests/mpi/mpirun_under.bash
np2() {
  timeout 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS \
    -x OPENBLAS_NUM_THREADS -x OPENBLAS_CORETYPE -np 2 "$@"
}
steps=100  # ~3 s of steps after the 2nd metrics line: room for the signal on a loaded machine

"$bin" init-model --preset sd1-tiny --seed 0 --out "$tmp/base" > /dev/null || fail "init-model"
"$bin" prepare --images jobs/data/dog --prompt "photo of unqtkn dog" --model "$tmp/base" \
  --out "$tmp/inst.h5" --latents 2> /dev/null || fail "prepare"
common=(--model "$tmp/base" --instance-data "$tmp/inst.h5" --seed 7 --max-steps $steps --lr 1e-4
  --checkpoint-every 100 --progress-seconds 0)

np2 "$bin" train "${common[@]}" --out "$tmp/straight" > "$tmp/straight.log" 2>&1 ||
  { cat "$tmp/straight.log"; fail "straight run"; }

# wait_steps FILE N: until FILE has N lines (the run is mid-way), at most 30 s.
wait_steps() {
  for _ in $(seq 300); do
    [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "no $2 metrics lines in $1 after 30 s"
}

# stop_and_resume NAME HOW: HOW = rank (SIGTERM to rank 1's process) | mpirun (SIGUSR1 to mpirun).
stop_and_resume() {
  local name=$1 how=$2 out="$tmp/$1" pid rc ckpt
  np2 "$bin" train "${common[@]}" --out "$out" --resume auto > "$tmp/$name.log" 2>&1 &
  pid=$!  # timeout's; mpirun is its child, the ranks mpirun's
  wait_steps "$out/metrics.jsonl" 2
  local mpirun_pid ranks
  mpirun_pid=$(mpirun_under "$pid")
  ranks=($(ps -o pid= --ppid "$mpirun_pid" | tr -d ' '))
  [ ${#ranks[@]} -eq 2 ] || { ps -eo pid,ppid,stat,cmd | grep -v grep | grep -e mpirun -e dreambooth; cat "$tmp/$name.log"; fail "$name: expected 2 rank processes under mpirun $mpirun_pid, got '${ranks[*]}'"; }
  if [ "$how" = rank ]; then kill -TERM "${ranks[1]}"; else kill -USR1 "$mpirun_pid"; fi
  wait "$pid"; rc=$?
  [ $rc -eq 3 ] || { cat "$tmp/$name.log"; fail "$name: exit $rc after the signal, expected 3"; }
  grep -q "stopped by a signal after step" "$tmp/$name.log" || fail "$name: no 'stopped by a signal' line"
  ckpt=$(ls -d "$out"/checkpoint-* 2> /dev/null)
  [ "$(echo "$ckpt" | wc -w)" = 1 ] || fail "$name: expected one checkpoint, got '$ckpt'"
  local at=${ckpt##*-}
  [ "$at" -ge 2 ] && [ "$at" -lt $steps ] || fail "$name: stopped at step $at, not mid-run"
  [ -z "$(ls -A "$out" | grep -e '\.tmp-' -e '\.dreambooth\.lock')" ] || fail "$name: left $(ls -A "$out")"
  [ ! -e "$out/model_index.json" ] || fail "$name: a stopped run wrote the pipeline"
  [ "$(wc -l < "$out/metrics.jsonl")" -ge "$at" ] || fail "$name: metrics.jsonl lacks steps before $at"
  np2 "$bin" train "${common[@]}" --out "$out" --resume auto > "$tmp/$name.resume.log" 2>&1 ||
    { cat "$tmp/$name.resume.log"; fail "$name: --resume auto"; }
  grep -q "resumed from .*checkpoint-$at at step $at" "$tmp/$name.resume.log" || fail "$name: did not resume at $at"
  for f in unet/diffusion_pytorch_model.safetensors text_encoder/model.safetensors; do
    "$bin" compare "$out/$f" "$tmp/straight/$f" --tol 0 > "$tmp/$name.cmp" 2>&1 ||
      { tail -n 5 "$tmp/$name.cmp"; fail "$name: $f differs from the straight run"; }
  done
  local logged
  logged=$(sed 's/.*"step":\([0-9]*\).*/\1/' "$out/metrics.jsonl" | tr '\n' ' ')
  [ "$logged" = "$(seq -s ' ' 1 $steps) " ] || fail "$name: metrics steps '$logged'"
  echo "$name: stopped at step $at with exit 3, resumed, bit-identical to the straight run"
}

stop_and_resume term_rank1 rank
stop_and_resume usr1_mpirun mpirun
