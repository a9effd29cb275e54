#!/usr/bin/env bash
# train --gpus-per-rank 2 (UNet on the first GPU of the pair, text encoder and VAE encoder on the second,
# hidden states and their gradient copied between them) on the CUDA emulator with two devices
# (DB_EMU_DEVICES=2), against the one-GPU emulated run of the same job, sd1-tiny, 3 steps:
#   - per-step losses and grad norms bit-identical, and the final weights too (the same kernels on the
#     same inputs in the same order; only the device they run on differs);
#   - the same without peer access (DB_EMU_PEER=0: copies staged by the runtime) and with pixels in the
#     shards (the VAE encoder on the second device), whose validation images (text encoder and VAE
#     decoder on the second device, UNet on the first) are the same PNG bytes;
#   - LoRA with text-encoder adapters: the same adapters;
#   - stop at step 2 (checkpoint) and --resume latest to step 3: weights bit-identical to the straight run;
#   - metrics.jsonl reports both devices' memory;
#   - exit 2 with a clear message: --device cpu, one device only, --gpus-per-rank 3.
# Usage: tests/cli/train_gpu_pair_emu.sh BUILD_DIR
set -uo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
emu="$1/emu/dreambooth"
[ -x "$emu" ] || { echo "FAILED: $emu not built (make builds it when the CUDA toolkit headers are present)"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_pair_emu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
t0=$(date +%s)

# shellcheck source=tests/mpi/tiny_data.bash
source tests/mpi/tiny_data.bash
tiny_data "$emu" "$tmp" || fail "init-model / prepare"  # base, inst.h5 and class.h5 with pixels
for d in inst class; do
  mv "$tmp/$d.h5" "$tmp/${d}_pixels.h5"
  prompt="photo of a dog"; [ $d = inst ] && prompt="photo of unqtkn dog"
  "$emu" prepare --images "$tmp/$d" --prompt "$prompt" --model "$tmp/base" --latents --device cpu \
    --out "$tmp/${d}_latents.h5" 2> "$tmp/prep.log" || { cat "$tmp/prep.log"; fail "prepare --latents $d"; }
done

train() {  # NAME DATA ARGS...: one emulated run (two devices for every run: the 1-GPU ones use device 0)
  local name=$1 data=$2; shift 2
  DB_EMU_DEVICES=${DEVICES:-2} "$emu" train --model "$tmp/base" --instance-data "$tmp/inst_$data.h5" \
    --class-data "$tmp/class_$data.h5" --seed 7 --lr 1e-4 --progress-seconds 0 --device cuda \
    --out "$tmp/$name" "$@" > /dev/null 2> "$tmp/$name.log" || { tail -n 20 "$tmp/$name.log"; fail "train $name"; }
}
m=metrics.jsonl
same_steps() {  # A B WHAT: every step's loss and grad norm equal
  jq -n -e --slurpfile a "$tmp/$1/$m" --slurpfile b "$tmp/$2/$m" \
    '($a | length) == ($b | length) and ([range(0; $a | length) |
      $a[.].loss == $b[.].loss and $a[.].grad_norm == $b[.].grad_norm] | all)' > /dev/null ||
    fail "$3: losses/grad norms $(jq -c '[.loss, .grad_norm]' "$tmp/$1/$m" | tr '\n' ' ') vs \
$(jq -c '[.loss, .grad_norm]' "$tmp/$2/$m" | tr '\n' ' ')"
}
same_weights() {  # A B WHAT: compare --json, every component max_abs == 0
  "$emu" compare "$tmp/$1" "$tmp/$2" --json > "$tmp/cmp.json" 2> "$tmp/cmp.err"
  jq -e '[.components[].max_abs] | max == 0' "$tmp/cmp.json" > /dev/null ||
    fail "$3: $(head -c 400 "$tmp/cmp.json") $(head -c 200 "$tmp/cmp.err")"
}

steps=(--max-steps 3 --checkpoint-every 0)
train one latents "${steps[@]}"
train pair latents "${steps[@]}" --gpus-per-rank 2
grep -q "UNet on CUDA device 0, text encoder on 1, copies between them peer to peer" "$tmp/pair.log" ||
  { cat "$tmp/pair.log"; fail "no placement line"; }
jq -n -r --slurpfile a "$tmp/one/$m" --slurpfile b "$tmp/pair/$m" \
  'range(0; 3) | "  step \(. + 1): loss \($a[.].loss) one GPU, \($b[.].loss) pair; grad_norm \($a[.].grad_norm) / \($b[.].grad_norm)"'
same_steps one pair "the pair differs from one GPU"
same_weights one pair "pair weights differ from one GPU's"
jq -e -s 'all(.mem_peak_mb > 0 and .mem_peak_mb_second > 0 and .mem_reserved_mb_second >= .mem_peak_mb_second)' \
  "$tmp/pair/$m" > /dev/null || fail "metrics: memory of both devices: $(head -n 1 "$tmp/pair/$m")"

DB_EMU_PEER=0 train staged latents "${steps[@]}" --gpus-per-rank 2
grep -q "staged through the host" "$tmp/staged.log" || { cat "$tmp/staged.log"; fail "no staged-copy line"; }
same_weights one staged "pair without peer access"

val=(--max-steps 2 --checkpoint-every 0 --validation-prompt "photo of unqtkn dog" --validation-every 2
  --validation-images 1 --validation-steps 2)
train one_px pixels "${val[@]}"
DB_EMU_PEER=0 train pair_px pixels "${val[@]}" --gpus-per-rank 2  # a kernel reading the other device fails
same_steps one_px pair_px "VAE-encoding pixels on the pair"
same_weights one_px pair_px "VAE-encoding pixels on the pair"
ls "$tmp/pair_px/validation/step-2/"*.png > /dev/null 2>&1 || fail "no validation image from the pair"
for f in "$tmp/one_px/validation/step-2/"*.png; do
  cmp -s "$f" "$tmp/pair_px/validation/step-2/$(basename "$f")" || fail "validation image $(basename "$f") differs"
done

lora=(--max-steps 2 --checkpoint-every 0 --lora-rank 4 --lora-text-encoder)
train lora_one latents "${lora[@]}"
train lora_pair latents "${lora[@]}" --gpus-per-rank 2
same_steps lora_one lora_pair "LoRA on the pair"
cmp -s "$tmp/lora_one/pytorch_lora_weights.safetensors" "$tmp/lora_pair/pytorch_lora_weights.safetensors" ||
  fail "LoRA adapters of the pair differ from one GPU's"

train half latents --max-steps 2 --checkpoint-every 2 --gpus-per-rank 2
train half latents --max-steps 3 --checkpoint-every 2 --gpus-per-rank 2 --resume latest
same_steps one half "stop at 2 + resume to 3 on the pair"
same_weights one half "stop at 2 + resume to 3 on the pair"

refused() {  # WHAT PATTERN ARGS...: exit 2 and the message
  local what=$1 pattern=$2; shift 2
  DB_EMU_DEVICES=${DEVICES:-2} "$emu" train --model "$tmp/base" --instance-data "$tmp/inst_latents.h5" \
    --out "$tmp/refused" --max-steps 1 "$@" > /dev/null 2> "$tmp/refused.log"
  local rc=$?
  if [ $rc -ne 2 ] || ! grep -q -- "$pattern" "$tmp/refused.log"; then
    fail "$what: exit $rc, $(cat "$tmp/refused.log")"
  fi
}
refused "--device cpu" "not with --device cpu" --device cpu --gpus-per-rank 2
DEVICES=1 refused "one device" "needs devices 0 and 1 but this node has 1" --device cuda --gpus-per-rank 2
refused "--gpus-per-rank 3" "must be 1 or 2" --device cuda --gpus-per-rank 3

echo "train --gpus-per-rank 2 on the CUDA emulator: OK ($(( $(date +%s) - t0 )) s)"
