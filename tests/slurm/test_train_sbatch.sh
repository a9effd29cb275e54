#!/usr/bin/env bash
# A real Slurm in CI: starts munged, slurmctld and slurmd on this machine (one node), submits
# jobs/train.sbatch with sd1-tiny on 2 ranks via `sbatch --wait`, checks the exit code and the outputs,
# stops a second train.sbatch job with USR1 and checks that it requeues itself and finishes,
# then runs jobs/scaling.sbatch on 1 and 2 workers (1 run, 2 steps) and checks its CSV and table.
# The daemons are stopped by pid whatever happens. Needs root, slurm-wlm and munge (jobs/setup.sh).
# Usage: tests/slurm/test_train_sbatch.sh [BUILD_DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
DB=$build/dreambooth
tmp=$(mktemp -d /tmp/dreambooth-slurm.XXXXXX)
# shellcheck source=tests/slurm/slurm_cluster.sh
source "$repo/tests/slurm/slurm_cluster.sh"
cleanup() { slurm_stop "$tmp/slurm"; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.out "$tmp"/slurm/log/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }; done; exit 1; }
export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=1

data=$tmp/data
mkdir -p "$data/shards/instance" "$data/shards/class"
"$DB" init-model --preset sd1-tiny --out "$data/model-orig" > /dev/null
"$DB" prepare --images "$repo/jobs/data/dog" --prompt "photo of unqtkn dog" --model "$data/model-orig" \
  --out "$data/shards/instance/instance.h5" --latents 2> /dev/null
mkdir -p "$tmp/class-images"
cp "$repo"/tests/fixtures/images/*.png "$tmp/class-images/"
"$DB" prepare --images "$tmp/class-images" --prompt "photo of a dog" --model "$data/model-orig" \
  --out "$data/shards/class/class.h5" --latents 2> /dev/null

slurm_start "$tmp/slurm" || fail "Slurm did not start"
echo "slurm: $(sinfo -h -o '%P %D nodes %c cpus %T')"

t0=$(date +%s)
DATA_PREFIX=$data MAX_STEPS=4 CHECKPOINT_EVERY=2 DREAMBOOTH=$DB \
  sbatch --wait --ntasks=2 --chdir="$repo" --output="$tmp/train.out" "$repo/jobs/train.sbatch" > "$tmp/submit.txt" ||
  fail "sbatch --wait jobs/train.sbatch exited $?"
echo "train.sbatch: $(cat "$tmp/submit.txt"), finished in $(( $(date +%s) - t0 )) s"
out=$data/model-tuned
[ -f "$out/model_index.json" ] || fail "no tuned model in $out"
[ "$(wc -l < "$out/metrics.jsonl")" -eq 4 ] || fail "expected 4 metric lines"
[ -d "$out/checkpoint-4" ] || fail "no checkpoint-4"
grep -q ", 2 rank(s), steps" "$tmp/train.out" || fail "the job did not run 2 ranks (no \"2 rank(s)\" in the training log)"
# compare exits 1 when the folders differ, which training must make them; a crash (signal), another
# code or an error line without a report is a failure of its own, not "UNet unchanged" (and jq -e on an
# empty file succeeds, hence -s and length == 1).
rc=0; "$DB" compare "$data/model-orig" "$out" --json > "$tmp/cmp.json" 2> "$tmp/cmp.err" || rc=$?
[ $rc -eq 1 ] && jq -e -s 'length == 1 and .[0].components.unet and .[0].components.vae' "$tmp/cmp.json" > /dev/null ||
  fail "compare base tuned: exit $rc (want 1: folders differ), $(head -c 300 "$tmp/cmp.err")"
jq -e '.components.unet.max_rel_l2 > 0' "$tmp/cmp.json" > /dev/null || fail "tuned model: UNet unchanged"
jq -e '.components.vae.max_abs == 0' "$tmp/cmp.json" > /dev/null || fail "tuned model: VAE changed"

# Stop and requeue (issue 16 item 1): USR1 to the job's tasks mid-run (what --signal=USR1@120 sends
# before the time limit) -> train checkpoints and exits 3 -> the script requeues the job -> the rerun
# resumes with --resume auto and finishes. Slurm delays a requeued job's start (Reason=BeginTime);
# the test releases it at once.
rq=$data/requeued
DATA_PREFIX=$data TUNED_MODEL_DIR=$rq MAX_STEPS=40 CHECKPOINT_EVERY=1000 DREAMBOOTH=$DB \
  sbatch --parsable --ntasks=2 --chdir="$repo" --output="$tmp/requeue.out" --open-mode=append \
  "$repo/jobs/train.sbatch" > "$tmp/requeue.id" || fail "sbatch (requeue)"
id=$(cat "$tmp/requeue.id")
for _ in $(seq 600); do [ -f "$rq/metrics.jsonl" ] && [ "$(wc -l < "$rq/metrics.jsonl")" -ge 3 ] && break; sleep 0.1; done
scancel --signal=USR1 "$id" || fail "scancel --signal=USR1"
released=0
for _ in $(seq 120); do
  info=$(scontrol show job "$id" 2> /dev/null || true)
  [ -z "$(squeue -h -j "$id" -o %T 2> /dev/null)" ] && break
  if [ $released = 0 ] && [[ "$info" == *"Restarts=1"* ]] && [[ "$info" == *"JobState=PENDING"* ]]; then
    scontrol update JobId="$id" StartTime=now && released=1
  fi
  sleep 1
done
[ -z "$(squeue -h -j "$id" -o %T 2> /dev/null)" ] || fail "the requeued job did not finish in 120 s"
grep -q "stopped by a signal after step" "$tmp/requeue.out" || fail "train did not stop on USR1"
grep -q "requeueing job $id" "$tmp/requeue.out" || fail "train.sbatch did not requeue after exit 3"
grep -q "resumed from .*checkpoint-" "$tmp/requeue.out" || fail "the requeued run did not resume"
[ -f "$rq/model_index.json" ] || fail "the requeued run wrote no pipeline"
[ "$(sed 's/.*"step":\([0-9]*\).*/\1/' "$rq/metrics.jsonl" | tr '\n' ' ')" = "$(seq -s ' ' 1 40) " ] ||
  fail "metrics.jsonl after stop and requeue: steps $(sed 's/.*"step":\([0-9]*\).*/\1/' "$rq/metrics.jsonl" | tr '\n' ' ')"
echo "train.sbatch: USR1 -> checkpoint, exit 3, requeue, --resume auto -> finished (steps 1..40 logged once)"

DATA_PREFIX=$data WORKERS="1 2" RUNS=1 MAX_STEPS=2 RESULTS=$tmp/scaling DREAMBOOTH=$DB \
  sbatch --wait --ntasks=2 --chdir="$repo" --output="$tmp/scaling.out" "$repo/jobs/scaling.sbatch" > /dev/null ||
  fail "sbatch --wait jobs/scaling.sbatch exited $?"
[ "$(wc -l < "$tmp/scaling/scaling.csv")" -eq 3 ] || fail "scaling.csv should have a header and 2 rows"
grep -q '^| 2 | 2 |' "$tmp/scaling/scaling.md" || fail "scaling table lacks the 2-worker row"
cat "$tmp/scaling/scaling.md"
echo "slurm: train.sbatch and scaling.sbatch OK"
