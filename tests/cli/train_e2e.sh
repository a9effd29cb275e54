#!/usr/bin/env bash
# The CPU acceptance run of `dreambooth train`, through the real binary:
#   init-model sd1-tiny -> prepare an instance and a class shard from the fixture photos (pixels; the
#   trainer VAE-encodes each step) -> train --max-steps 20 (lr 1e-4, checkpoints every 10, keep 1,
#   validation images every 10 steps: 2 images, 3 sampling steps)
# and checks: training lowers the loss, every metrics line has the documented fields, only checkpoint-20
# is kept, and `compare BASE OUT` shows the UNet and text encoder changed and the VAE bit-identical;
# OUT/validation/step-{10,20} hold the images and the last equal `generate` from the output with the
# manifest's seed; --validation-prompt without --validation-every is a usage error. (That diffusers
# loads the output is CI's check: tests/reference/check_outputs.sh, with the reference venv.)
#
# "Training lowers the loss": a step's loss depends mostly on its random draws (examples, timesteps,
# noise), so a falling curve proves little (a run without learning fell by 0.084 from its first 5 steps
# to its last 5 here, the real one by 0.188). So the same run is repeated without learning (--lr 1e-12:
# the CLI refuses 0, and no weight moves by more than ~2e-11) with the same seed, hence the same draws,
# and the losses are compared step by step: at each of steps 11-20 the trained instance loss must be
# lower, by 0.03 on average (measured: lower at every step from 2 on, by 0.097 on average over 11-20).
# Usage: tests/cli/train_e2e.sh BUILD_DIR
set -uo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # predictable on a loaded CI machine (OpenMP barriers spin)
bin="$1/dreambooth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_train_e2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
# compare_json A B OUT: `compare --json`; exit 0 (same) or 1 (different) with one JSON report, else a
# failure (jq -e on an empty file succeeds, so a crashed compare would pass every later check).
compare_json() {
  local rc=0
  "$bin" compare "$1" "$2" --json > "$3" 2> "$3.err" || rc=$?
  [ $rc -le 1 ] && jq -e -s 'length == 1 and (.[0].components | type == "object")' "$3" > /dev/null ||
    fail "compare $1 $2: exit $rc, no report: $(head -c 300 "$3.err")"
}
t0=$(date +%s)

"$bin" init-model --preset sd1-tiny --seed 3 --out "$tmp/base" > /dev/null || fail "init-model"
mkdir -p "$tmp/inst" "$tmp/class"
fx=tests/fixtures/images
cp $fx/exif1_le_60x34.jpg $fx/gray_77x99.jpg $fx/progressive_161x120.jpg "$tmp/inst/"
cp $fx/cmyk_53x41.jpg $fx/exif6_40x24.png $fx/graya_70x40.png $fx/rgb16_50x33.png $fx/palette_trns_64x45.png "$tmp/class/"
"$bin" prepare --images "$tmp/inst" --prompt "photo of unqtkn dog" --model "$tmp/base" \
  --out "$tmp/inst.h5" 2> "$tmp/prep1.log" || { cat "$tmp/prep1.log"; fail "prepare instance"; }
"$bin" prepare --images "$tmp/class" --prompt "photo of a dog" --model "$tmp/base" \
  --out "$tmp/class.h5" 2> "$tmp/prep2.log" || { cat "$tmp/prep2.log"; fail "prepare class"; }

"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class.h5" \
  --out "$tmp/out" --max-steps 20 --lr 1e-4 --seed 7 --checkpoint-every 10 --keep-checkpoints 1 \
  --progress-seconds 0 --validation-prompt "photo of unqtkn dog" --validation-every 10 \
  --validation-steps 3 2> "$tmp/train.log" || { cat "$tmp/train.log"; fail "train"; }
tail -n 3 "$tmp/train.log"
grep -q "^train: step 20/20 .*loss .*lr .*grad_norm .*s/step .*samples/s .*ETA" "$tmp/train.log" ||
  fail "no progress line for step 20"

for s in 10 20; do
  grep -q "^validation: step $s, 2 images -> $tmp/out/validation/step-$s, .* s$" "$tmp/train.log" ||
    fail "no validation line for step $s"
  for f in 00000.png 00001.png manifest.jsonl; do
    [ -f "$tmp/out/validation/step-$s/$f" ] || fail "missing validation/step-$s/$f"
  done
done
[ "$(ls "$tmp/out/validation")" = "$(printf 'step-10\nstep-20')" ] || fail "validation folders: $(ls "$tmp/out/validation")"
vseed=$(jq -r .seed "$tmp/out/validation/step-20/manifest.jsonl" | head -n 1)
"$bin" generate --model "$tmp/out" --prompt "photo of unqtkn dog" --num-images 2 --steps 3 --seed "$vseed" \
  --out "$tmp/gen" 2> "$tmp/gen.log" || { cat "$tmp/gen.log"; fail "generate"; }
for f in 00000.png 00001.png; do
  cmp -s "$tmp/gen/$f" "$tmp/out/validation/step-20/$f" || fail "generate --seed $vseed: $f differs from validation/step-20"
done
"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --out "$tmp/bad" --max-steps 1 \
  --validation-prompt x 2> "$tmp/bad.log" && fail "--validation-prompt without --validation-every accepted"
grep -q -- "--validation-every must be >= 1" "$tmp/bad.log" || { cat "$tmp/bad.log"; fail "no usage message"; }

# Under mpirun (a dependency: jobs/setup.sh installs it): rank 0 makes the images while rank 1 waits; no
# hang, one writer.
timeout 300 mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" train \
  --model "$tmp/base" --instance-data "$tmp/inst.h5" --out "$tmp/np2" --max-steps 2 --seed 7 \
  --validation-prompt "photo of unqtkn dog" --validation-every 1 --validation-steps 2 \
  > "$tmp/np2.log" 2>&1 || { cat "$tmp/np2.log"; fail "train -np 2 with validation"; }
[ "$(grep -c '^validation: step' "$tmp/np2.log")" = 2 ] || { cat "$tmp/np2.log"; fail "-np 2: validation lines"; }
for s in 1 2; do
  [ -f "$tmp/np2/validation/step-$s/00001.png" ] || fail "-np 2: missing validation/step-$s/00001.png"
done

m=$tmp/out/metrics.jsonl
[ "$(wc -l < "$m")" = 20 ] || fail "metrics: $(wc -l < "$m") lines, expected 20"
for k in step loss loss_instance loss_prior lr grad_norm step_time_s data_wait_s rss_mb mem_peak_mb mem_reserved_mb; do
  [ "$(jq -e "has(\"$k\")" "$m" | grep -c true)" = 20 ] || fail "metrics: field $k missing"
done
# The same run without learning (see the header): same seed, same draws.
"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class.h5" \
  --out "$tmp/frozen" --max-steps 20 --lr 1e-12 --seed 7 --checkpoint-every 0 --progress-seconds 0 \
  2> "$tmp/frozen.log" || { cat "$tmp/frozen.log"; fail "train --lr 1e-12"; }
compare_json "$tmp/base" "$tmp/frozen" "$tmp/frozen_cmp.json"
jq -e '[.components[].max_abs] | max < 1e-9' "$tmp/frozen_cmp.json" > /dev/null ||
  fail "--lr 1e-12 moved weights by $(jq '[.components[].max_abs] | max' "$tmp/frozen_cmp.json")"
f=$tmp/frozen/metrics.jsonl
jq -n -e --slurpfile a "$m" --slurpfile b "$f" '$a[0].loss == $b[0].loss' > /dev/null ||
  fail "step 1 losses differ between the runs (different draws?): $(head -1 "$m") vs $(head -1 "$f")"
jq -n -r --slurpfile a "$m" --slurpfile b "$f" \
  'range(10; 20) | "  step \(. + 1): instance loss \($a[.].loss_instance) trained, \($b[.].loss_instance) without learning"'
worse=$(jq -n --slurpfile a "$m" --slurpfile b "$f" '[range(10; 20) | select($a[.].loss_instance >= $b[.].loss_instance) | . + 1]')
gain=$(jq -n --slurpfile a "$m" --slurpfile b "$f" '[range(10; 20) | $b[.].loss_instance - $a[.].loss_instance] | add / length')
echo "instance loss over steps 11-20: $gain lower on average than without learning; not lower at steps $worse"
[ "$worse" = "[]" ] || fail "training did not lower the instance loss at steps $worse"
jq -n -e --argjson g "$gain" '$g >= 0.03' > /dev/null || fail "training lowered the instance loss by only $gain (< 0.03)"

ls -d "$tmp/out"/checkpoint-* | grep -q "checkpoint-20$" || fail "checkpoint-20 missing"
[ "$(ls -d "$tmp/out"/checkpoint-* | wc -l)" = 1 ] || fail "--keep-checkpoints 1 kept $(ls -d "$tmp/out"/checkpoint-*)"
for f in model_index.json unet/config.json text_encoder/config.json vae/config.json tokenizer/vocab.json \
  scheduler/scheduler_config.json checkpoint-20/state.json checkpoint-20/optimizer.safetensors; do
  [ -f "$tmp/out/$f" ] || fail "missing $f"
done

compare_json "$tmp/base" "$tmp/out" "$tmp/cmp.json"
for c in unet text_encoder; do
  jq -e ".components.$c.max_rel_l2 > 0" "$tmp/cmp.json" > /dev/null || fail "$c did not change"
done
jq -e '.components.vae.max_rel_l2 == 0 and .components.vae.max_abs == 0' "$tmp/cmp.json" > /dev/null ||
  fail "the VAE changed"
jq -c '.components | map_values(.max_rel_l2)' "$tmp/cmp.json"

echo "train e2e: OK ($(( $(date +%s) - t0 )) s)"
