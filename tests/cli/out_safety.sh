#!/usr/bin/env bash
# Output-folder safety (issue 16 items 4 and 5), each case with its exit status and message:
#   --out equal to, inside, or a symbolic link to --model: exit 2, the base model's files unchanged;
#   a lock held by a live process: exit 2 naming its host and pid; a stale lock (dead pid): taken over
#   with a warning and removed at the end; a fresh run into an OUT with checkpoints: exit 2;
#   --resume with other data, model and --lr: exit 1 naming each difference; a checkpoint missing a file
#   is not resumed from; --overwrite removes an earlier run's checkpoints; a metrics file that cannot be written (/dev/full): exit 1 naming it;
#   `prepare` refuses (and with --overwrite removes) a shard set of another rank count.
# Usage: tests/cli/out_safety.sh BUILD_DIR
set -uo pipefail
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
bin="$1/dreambooth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_out_safety.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
# expect CODE PATTERN NAME COMMAND...: exit status CODE and PATTERN (grep -E) in the output.
expect() {
  local code=$1 pat=$2 name=$3 rc; shift 3
  "$@" > "$tmp/$name.log" 2>&1; rc=$?
  [ $rc -eq "$code" ] || { cat "$tmp/$name.log"; fail "$name: exit $rc, expected $code"; }
  grep -qE -- "$pat" "$tmp/$name.log" || { cat "$tmp/$name.log"; fail "$name: no '$pat' in the output"; }
  echo "ok: $name (exit $rc)"
}
tree_sum() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }

"$bin" init-model --preset sd1-tiny --seed 0 --out "$tmp/base" > /dev/null 2>&1 || fail "init-model"
"$bin" init-model --preset sd1-tiny --seed 1 --out "$tmp/base1" > /dev/null 2>&1 || fail "init-model 1"
for p in inst:"photo of unqtkn dog" other:"photo of a dog"; do
  "$bin" prepare --images jobs/data/dog --prompt "${p#*:}" --model "$tmp/base" --out "$tmp/${p%%:*}.h5" \
    --latents 2> /dev/null || fail "prepare ${p%%:*}"
done
base_sum=$(tree_sum "$tmp/base")
run=("$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --checkpoint-every 1 --lr 1e-4
  --progress-seconds 0)
train=("${run[@]}" --max-steps 2)

ln -s "$tmp/base" "$tmp/base_link"
expect 2 "is the base model folder" out_is_model "${train[@]}" --out "$tmp/base"
expect 2 "is the base model folder" out_is_link "${train[@]}" --out "$tmp/base_link"
expect 2 "lies inside the base model" out_in_model "${train[@]}" --out "$tmp/base/tuned"
[ "$(tree_sum "$tmp/base")" = "$base_sum" ] || fail "the base model folder changed"
[ -e "$tmp/base/model_index.json" ] || fail "the base model lost model_index.json"

mkdir -p "$tmp/out"
printf 'host %s\npid %s\nslurm_job \n' "$(hostname)" $$ > "$tmp/out/.dreambooth.lock"
expect 2 "in use by another run: host $(hostname) pid $$" lock_held "${train[@]}" --out "$tmp/out"
grep -q "pid $$" "$tmp/out/.dreambooth.lock" || fail "a refused run touched the holder's lock"
sh -c 'exit 0' & dead=$!; wait $dead
printf 'host %s\npid %s\n' "$(hostname)" $dead > "$tmp/out/.dreambooth.lock"
expect 0 "taking over a stale lock" lock_stale "${train[@]}" --out "$tmp/out"
[ ! -e "$tmp/out/.dreambooth.lock" ] || fail "the lock was left after the run"
[ "$(wc -l < "$tmp/out/metrics.jsonl")" = 2 ] || fail "metrics.jsonl has $(wc -l < "$tmp/out/metrics.jsonl") lines"

expect 2 "holds checkpoints of an earlier run" fresh_over_old "${train[@]}" --out "$tmp/out"
expect 1 "this run differs: .*data: .*lr: checkpoint" resume_other_data "$bin" train --model "$tmp/base" \
  --instance-data "$tmp/other.h5" --max-steps 3 --lr 2e-4 --out "$tmp/out" --resume latest
expect 1 "this run differs: model: checkpoint trained from" resume_other_model "$bin" train \
  --model "$tmp/base1" --instance-data "$tmp/inst.h5" --max-steps 3 --lr 1e-4 --out "$tmp/out" --resume latest
rm "$tmp/out/checkpoint-2/optimizer.safetensors"
expect 1 "not a complete checkpoint \(optimizer.safetensors is missing\)" resume_incomplete "${run[@]}" \
  --max-steps 3 --out "$tmp/out" --resume "$tmp/out/checkpoint-2"
expect 0 "resumed from .*checkpoint-1 at step 1" resume_skips_incomplete "${run[@]}" --max-steps 3 \
  --out "$tmp/out" --resume latest
[ "$(sed 's/.*"step":\([0-9]*\).*/\1/' "$tmp/out/metrics.jsonl" | tr '\n' ' ')" = "1 2 3 " ] ||
  fail "metrics after resume: $(cat "$tmp/out/metrics.jsonl")"

expect 0 "--overwrite: removed .*checkpoint-3 of an earlier run" overwrite "${train[@]}" --out "$tmp/out" \
  --overwrite
[ "$(ls -d "$tmp/out"/checkpoint-* | wc -l)" = 2 ] && [ ! -e "$tmp/out/checkpoint-3" ] ||
  fail "--overwrite left $(ls -d "$tmp/out"/checkpoint-*)"

expect 1 "/dev/full: cannot write the metrics line" metrics_full "${train[@]}" --out "$tmp/out_full" \
  --metrics /dev/full

timeout 60 mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 "$bin" prepare --images jobs/data/dog \
  --prompt "photo of a dog" --model "$tmp/base" --out "$tmp/set.h5" > /dev/null 2>&1 || fail "prepare -np 2"
[ -e "$tmp/set-00001-of-00002.h5" ] || fail "prepare -np 2 wrote $(ls "$tmp")"
prep=("$bin" prepare --images jobs/data/dog --prompt "photo of a dog" --model "$tmp/base" --out "$tmp/set.h5")
expect 1 "set-00000-of-00002.h5 exists, a shard set written by another number of ranks" prep_other_set "${prep[@]}"
expect 0 "removed .*set-00001-of-00002.h5" prep_overwrite "${prep[@]}" --overwrite
[ -z "$(ls "$tmp" | grep -- '-of-')" ] || fail "--overwrite left $(ls "$tmp" | grep -- '-of-')"
