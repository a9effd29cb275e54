#!/usr/bin/env bash
# Shards and models that do not belong together, through the real binary (issue 16 items 3 and 7): each
# must exit 1 with one error line naming what differs, before any step is trained or image written.
#   - shards tokenised by a tokenizer that pads with another id (SD 2.x's "!" = 0 vs SD 1.x's
#     <|endoftext|>): both tokenizer fingerprints named;
#   - cached latents of another VAE: both VAE fingerprints named (and --no-cached-latents trains);
#   - a model without tokenizer/: train refuses it;
#   - a NaN in the UNet weights: generate and train name the tensor;
#   - a prompt longer than 77 tokens: prepare warns, naming what was cut off.
# Usage: tests/cli/shard_model_checks.sh BUILD_DIR
set -uo pipefail
bin="$1/dreambooth"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_shard_model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
fails=0; passes=0

"$bin" init-model --preset sd1-tiny --seed 1 --out "$tmp/base" > /dev/null 2>&1 || fail "init-model"
"$bin" init-model --preset sd1-tiny --seed 2 --out "$tmp/other" > /dev/null 2>&1 || fail "init-model 2"
cp -r "$tmp/base/tokenizer/." "$tmp/other/tokenizer/"  # same tokenizer, other VAE weights
mkdir -p "$tmp/img"
cp tests/fixtures/images/rgb_37x91.png tests/fixtures/images/gray_77x99.jpg "$tmp/img/"
"$bin" prepare --images "$tmp/img" --prompt "photo of unqtkn dog" --model "$tmp/base" --out "$tmp/inst.h5" \
  --latents 2> "$tmp/prep.log" || { cat "$tmp/prep.log"; fail "prepare"; }

# expect NAME WANT... -- ARGS: exit 1, exactly one "error" line, holding every WANT; nothing in $tmp/out.
expect() {
  local name=$1 rc out errs ok=1; shift
  local wants=()
  while [ "$1" != "--" ]; do wants+=("$1"); shift; done
  shift
  rm -rf "$tmp/out"
  out=$("$bin" "$@" 2>&1); rc=$?
  errs=$(printf '%s\n' "$out" | grep -c '^error')
  [ $rc -eq 1 ] && [ "$errs" -eq 1 ] || ok=0
  for w in "${wants[@]}"; do [[ "$out" == *"$w"* ]] || ok=0; done
  [ -e "$tmp/out/model_index.json" ] && ok=0
  if [ $ok -eq 1 ]; then
    passes=$((passes + 1)); echo "ok   $name: $(printf '%s\n' "$out" | grep '^error')"
  else
    fails=$((fails + 1)); echo "FAIL $name: exit $rc, $errs error lines:"; printf '%s\n' "$out" | tail -n 4
  fi
}
fp() { printf '%s' "$1"; }
TRAIN=(train --instance-data "$tmp/inst.h5" --out "$tmp/out" --max-steps 1 --progress-seconds 0)

# SD 2.x-style padding: the same vocab and merges, pad token "!" (id 0).
cp -r "$tmp/base" "$tmp/pad0"
printf '{"pad_token": "!"}' > "$tmp/pad0/tokenizer/special_tokens_map.json"
expect tokenizer-pad-id "tokenised with another tokenizer" "inst.h5" "$tmp/pad0/tokenizer" -- \
  "${TRAIN[@]}" --model "$tmp/pad0"
# Both fingerprints are printed in full (64 hex each).
out=$("$bin" "${TRAIN[@]}" --model "$tmp/pad0" 2>&1)
n=$(printf '%s\n' "$out" | grep -oE '[0-9a-f]{64}' | sort -u | wc -l)
if [ "$n" -eq 2 ]; then passes=$((passes + 1)); echo "ok   both tokenizer fingerprints named";
else fails=$((fails + 1)); echo "FAIL: $n distinct fingerprints in: $out"; fi

expect vae "hold latents of another VAE" "vae_fingerprint" "--no-cached-latents" -- "${TRAIN[@]}" --model "$tmp/other"
rm -rf "$tmp/out"
if "$bin" "${TRAIN[@]}" --model "$tmp/other" --no-cached-latents > /dev/null 2> "$tmp/nocache.log"; then
  passes=$((passes + 1)); echo "ok   --no-cached-latents trains with another VAE (pixels encoded by it)"
else
  fails=$((fails + 1)); echo "FAIL --no-cached-latents:"; tail -n 3 "$tmp/nocache.log"
fi

cp -r "$tmp/base" "$tmp/notok"; rm -rf "$tmp/notok/tokenizer"
expect no-tokenizer "has no tokenizer/" "$tmp/notok" -- "${TRAIN[@]}" --model "$tmp/notok"

# A NaN (f32 0x7fc00000) over the first 4 data bytes of the UNet weights file.
cp -r "$tmp/base" "$tmp/nan"
w="$tmp/nan/unet/diffusion_pytorch_model.safetensors"
hdr=$(od -An -tu8 -N8 "$w" | tr -d ' ')
printf '\x00\x00\xc0\x7f' | dd of="$w" bs=1 seek=$((8 + hdr)) conv=notrunc status=none
expect nan-generate "diffusion_pytorch_model.safetensors: tensor " "non-finite" -- generate --model "$tmp/nan" \
  --prompt "a dog" --steps 2 --out "$tmp/out"
[ -e "$tmp/out/00000.png" ] && { fails=$((fails + 1)); echo "FAIL: generate wrote an image"; }
expect nan-train "diffusion_pytorch_model.safetensors: tensor " "non-finite" -- "${TRAIN[@]}" --model "$tmp/nan"

# A prompt past 77 tokens: a warning naming the cut-off words, and the shard is written.
long="photo of unqtkn dog $(printf 'very %.0s' $(seq 1 80))end"
if "$bin" prepare --images "$tmp/img" --prompt "$long" --model "$tmp/base" --out "$tmp/long.h5" \
  > /dev/null 2> "$tmp/long.log" && grep -q "^warning: prompt is longer than 77 tokens; .* cut off: \".*end\"" "$tmp/long.log"; then
  passes=$((passes + 1)); echo "ok   truncation: $(grep '^warning' "$tmp/long.log" | cut -c1-100)..."
else
  fails=$((fails + 1)); echo "FAIL truncation warning:"; cat "$tmp/long.log"
fi

echo "shard/model checks: $passes passed, $fails failed"
[ $fails -eq 0 ]
