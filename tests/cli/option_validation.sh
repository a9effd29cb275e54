#!/usr/bin/env bash
# Bad option values through the real binary (issue 16 item 6): each case must exit 2 with ONE line on
# stderr that holds the expected words (the option and why), and must write nothing. Values a
# comparison with NaN would let through (clipping, min-SNR weighting silently off) are among them.
# Usage: tests/cli/option_validation.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_options.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
fails=0; passes=0

"$bin" init-model --preset sd1-tiny --seed 1 --out "$tmp/base" > /dev/null 2>&1 || fail "init-model"
mkdir -p "$tmp/img"
cp tests/fixtures/images/rgb_37x91.png tests/fixtures/images/gray_77x99.jpg "$tmp/img/"
"$bin" prepare --images "$tmp/img" --prompt "photo of unqtkn dog" --model "$tmp/base" --out "$tmp/inst.h5" \
  2> "$tmp/prep.log" || { cat "$tmp/prep.log"; fail "prepare"; }

# check NAME CODE WANT -- ARGS...: exit CODE, and for CODE 2 exactly one stderr line (warnings aside) containing WANT
# (for CODE 0, WANT on stdout); nothing may appear at $tmp/never.
check() {
  local name=$1 code=$2 want=$3 rc out lines; shift 4
  "$bin" "$@" > "$tmp/stdout" 2> "$tmp/stderr"; rc=$?
  if [ "$code" -eq 0 ]; then out=$(cat "$tmp/stdout"); else out=$(cat "$tmp/stderr"); fi
  out=$(printf '%s\n' "$out" | grep -v '^warning: ')  # e.g. "no usable CUDA device" before the check
  lines=$(printf '%s\n' "$out" | grep -c .)
  if [ $rc -eq "$code" ] && [ "$lines" -eq 1 ] && [[ "$out" == *"$want"* ]] && [ ! -e "$tmp/never" ]; then
    passes=$((passes + 1)); echo "ok   $name: $out"
  else
    fails=$((fails + 1)); echo "FAIL $name: exit $rc (want $code), $lines lines: $out"
    [ -e "$tmp/never" ] && echo "     and it wrote $tmp/never"
    rm -rf "$tmp/never"
  fi
}
T=(train --model "$tmp/base" --instance-data "$tmp/inst.h5" --out "$tmp/never" --max-steps 1)
check beta1-1.5 2 "--adam-beta1 must be a number in [0, 1) (got 1.5)" -- "${T[@]}" --adam-beta1 1.5
check beta1-neg 2 "--adam-beta1" -- "${T[@]}" --adam-beta1 -0.1
check beta2-nan 2 "--adam-beta2 must be a number in [0, 1) (got nan)" -- "${T[@]}" --adam-beta2 nan
check beta2-1 2 "--adam-beta2" -- "${T[@]}" --adam-beta2 1
check epsilon-0 2 "--adam-epsilon must be a finite number > 0 (got 0)" -- "${T[@]}" --adam-epsilon 0
check weight-decay--1 2 "--weight-decay must be a finite number >= 0 (got -1)" -- "${T[@]}" --weight-decay -1
check max-grad-norm--1 2 "--max-grad-norm must be a finite number >= 0 (got -1)" -- "${T[@]}" --max-grad-norm -1
check max-grad-norm-nan 2 "--max-grad-norm must be a finite number >= 0 (got nan)" -- "${T[@]}" --max-grad-norm nan
check snr-gamma--1 2 "--snr-gamma must be a finite number >= 0 (got -1)" -- "${T[@]}" --snr-gamma -1
check snr-gamma-nan 2 "--snr-gamma must be a finite number >= 0 (got nan)" -- "${T[@]}" --snr-gamma nan
check prior-loss-weight-nan 2 "--prior-loss-weight must be a finite number >= 0 (got nan)" -- \
  "${T[@]}" --prior-loss-weight nan
check lr-nan 2 "--lr must be a finite number > 0 (got nan)" -- "${T[@]}" --lr nan
check lr-inf 2 "--lr must be a finite number > 0 (got inf)" -- "${T[@]}" --lr inf
check lr-0 2 "--lr must be a finite number > 0 (got 0)" -- "${T[@]}" --lr 0
check lr-scheduler 2 "--lr-scheduler must be one of constant | constant_with_warmup | linear | cosine (got 'bogus')" -- \
  "${T[@]}" --lr-scheduler bogus
check save-dtype 2 "--save-dtype must be one of fp32 | fp16 | bf16" -- "${T[@]}" --save-dtype fp8
check bucket-mb--1 2 "train: --bucket-mb must be a finite number >= 0 (got -1)" -- "${T[@]}" --bucket-mb -1
check bucket-mb-nan 2 "train: --bucket-mb must be a finite number >= 0 (got nan)" -- "${T[@]}" --bucket-mb nan
check device-train 2 "train: --device must be one of auto | cpu | cuda (got 'tpu')" -- "${T[@]}" --device tpu
check validation-prompt-utf8 2 "train: --validation-prompt is not valid UTF-8" -- "${T[@]}" \
  --validation-prompt $'photo of \xff dog' --validation-every 1
check device-prepare 2 "prepare: --device must be one of" -- prepare --images "$tmp/img" --prompt p \
  --model "$tmp/base" --out "$tmp/never.h5" --device tpu
check device-generate 2 "generate: --device must be one of" -- generate --model "$tmp/base" --prompt p \
  --out "$tmp/never" --device tpu
check compare-tol 2 "compare: --tol must be a finite number >= 0 (got -1)" -- compare "$tmp/base" "$tmp/base" --tol -1
check compare-tol-nan 2 "compare: --tol must be a finite number >= 0 (got nan)" -- compare "$tmp/base" "$tmp/base" --tol nan
# sd1-tiny: VAE factor 2 x UNet factor 2 (init-model's tiny preset); train would fail later in a concat.
check resolution 2 "prepare: --resolution 34 is not a multiple of" -- prepare --images "$tmp/img" --prompt p \
  --model "$tmp/base" --out "$tmp/never.h5" --resolution 34
check prompt-utf8-prepare 2 "prepare: --prompt is not valid UTF-8 (bad byte 0xc3 at offset 6)" -- prepare \
  --images "$tmp/img" --prompt $'photo \xc3(' --model "$tmp/base" --out "$tmp/never.h5"
check prompt-utf8-generate 2 "generate: --prompt is not valid UTF-8" -- generate --model "$tmp/base" \
  --prompt $'photo \xed\xa0\x80' --out "$tmp/never"
check negative-utf8-generate 2 "generate: --negative-prompt is not valid UTF-8" -- generate --model "$tmp/base" \
  --prompt ok --negative-prompt $'\xc0\xaf' --out "$tmp/never"
check tokenize-utf8 2 "tokenize: TEXT is not valid UTF-8" -- tokenize --model "$tmp/base" $'\xf4\x90\x80\x80'
check version 0 "dreambooth 0." -- --version
[ -e "$tmp/never.h5" ] && { fails=$((fails + 1)); echo "FAIL: a refused prepare wrote $tmp/never.h5"; }

# --resume with --max-steps below the checkpoint's step: refused before any step (exit 2).
"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --out "$tmp/run" --max-steps 2 \
  --checkpoint-every 2 --progress-seconds 0 > /dev/null 2> "$tmp/train.log" || { cat "$tmp/train.log"; fail "train"; }
before=$(wc -l < "$tmp/run/metrics.jsonl")
check resume-below 2 "--max-steps 1 is below the step of the checkpoint" -- train --model "$tmp/base" \
  --instance-data "$tmp/inst.h5" --out "$tmp/run" --max-steps 1 --resume latest
[ "$(wc -l < "$tmp/run/metrics.jsonl")" -eq "$before" ] || { fails=$((fails + 1)); echo "FAIL: metrics changed"; }

echo "option validation: $passes passed, $fails failed"
[ $fails -eq 0 ]
