#!/usr/bin/env bash
# Real clients read what the C++ binary writes (CI runs this after `make test`, with the pinned venv of
# tests/reference/setup_venv.sh): DESIGN.md decision 7 says a tuned model loads in diffusers'
# StableDiffusionPipeline and a shard is plain HDF5 that h5py reads; only the real libraries prove it.
#   1. init-model sd1-tiny: check_pipeline_loads.py (every tensor compared with the loaded modules,
#      2 denoising steps, finite image);
#   2. prepare: an instance shard with VAE latents (1 rank) and a class shard of pixels only, written by
#      `mpirun -np 2` as two rank shards: check_shard.py (h5py, schema v1 of docs/DATA_FORMAT.md);
#   3. train 4 steps on them (checkpoint at step 2, prior preservation, text encoder trained):
#      check_pipeline_loads.py on the output, and the same on checkpoint-2 made whole with the base's
#      vae/, tokenizer/, scheduler/ and model_index.json (a checkpoint holds the trained parts only);
#   4. train --lora-rank 4 --lora-alpha 8 --lora-text-encoder 3 steps: check_lora_loads.py (diffusers'
#      load_lora_weights + fuse_lora give W + B A for every adapter of pytorch_lora_weights.safetensors,
#      2 denoising steps) on the output and on checkpoint-2's copy;
#   5. export --format single-file (fp16 of the trained pipeline; fp32 of the base with that LoRA merged):
#      check_single_file.py (from_single_file(FILE, config=DIR) holds every tensor of the folder);
#   6. export --format kohya-lora of the LoRA output: check_lora_loads.py loads it and gets the same W + B A.
# Usage: tests/reference/check_outputs.sh BUILD_DIR PYTHON   (PYTHON: the reference venv's python)
set -uo pipefail
build=$1 py=$2
bin="$build/dreambooth"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
export HF_HUB_DISABLE_PROGRESS_BARS=1  # no tqdm bars in the CI log
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_check_outputs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
[ -x "$py" ] || fail "no python at $py (tests/reference/setup_venv.sh makes the venv)"
t0=$(date +%s)

"$bin" init-model --preset sd1-tiny --seed 4 --out "$tmp/base" > /dev/null || fail "init-model"
"$py" tests/reference/check_pipeline_loads.py "$tmp/base" || fail "diffusers cannot load init-model's folder"

mkdir -p "$tmp/inst" "$tmp/class"
fx=tests/fixtures/images
cp $fx/exif1_le_60x34.jpg $fx/gray_77x99.jpg $fx/progressive_161x120.jpg "$tmp/inst/"
cp $fx/cmyk_53x41.jpg $fx/exif6_40x24.png $fx/graya_70x40.png $fx/rgb16_50x33.png "$tmp/class/"
"$bin" prepare --images "$tmp/inst" --prompt "photo of unqtkn dog" --model "$tmp/base" --latents \
  --out "$tmp/inst.h5" 2> "$tmp/prep1.log" || { cat "$tmp/prep1.log"; fail "prepare --latents"; }
mpirun --allow-run-as-root --oversubscribe -np 2 "$bin" prepare --images "$tmp/class" \
  --prompt "photo of a dog" --model "$tmp/base" --out "$tmp/class.h5" 2> "$tmp/prep2.log" ||
  { cat "$tmp/prep2.log"; fail "mpirun -np 2 prepare"; }
shards=("$tmp/inst.h5" "$tmp"/class-0000?-of-00002.h5)
[ ${#shards[@]} -eq 3 ] || fail "expected 3 shards, got ${shards[*]}"
"$py" tests/reference/check_shard.py "${shards[@]}" || fail "h5py: a shard does not match schema v1"

"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class-0000?-of-00002.h5" \
  --out "$tmp/out" --max-steps 4 --lr 1e-3 --seed 5 --checkpoint-every 2 --keep-checkpoints 2 \
  --progress-seconds 0 2> "$tmp/train.log" || { cat "$tmp/train.log"; fail "train"; }
"$py" tests/reference/check_pipeline_loads.py "$tmp/out" || fail "diffusers cannot load the trained output"
ckpt=$tmp/out/checkpoint-2
[ -d "$ckpt/unet" ] && [ -d "$ckpt/text_encoder" ] || fail "no checkpoint-2 with unet/ and text_encoder/"
for part in vae tokenizer scheduler model_index.json; do cp -r "$tmp/base/$part" "$ckpt/"; done
"$py" tests/reference/check_pipeline_loads.py "$ckpt" || fail "diffusers cannot load checkpoint-2's weights"
"$bin" train --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class-0000?-of-00002.h5" \
  --out "$tmp/lora" --max-steps 3 --lr 1e-2 --seed 5 --checkpoint-every 2 --lora-rank 4 --lora-alpha 8 \
  --lora-text-encoder --progress-seconds 0 2> "$tmp/lora.log" || { cat "$tmp/lora.log"; fail "train --lora-rank"; }
for f in "$tmp/lora/pytorch_lora_weights.safetensors" "$tmp/lora/checkpoint-2/pytorch_lora_weights.safetensors"; do
  "$py" tests/reference/check_lora_loads.py "$tmp/base" "$f" || fail "diffusers cannot load $f"
done
"$bin" export --model "$tmp/out" --format single-file --out "$tmp/single.safetensors" > /dev/null ||
  fail "export --format single-file"
"$py" tests/reference/check_single_file.py "$tmp/single.safetensors" "$tmp/out" ||
  fail "diffusers from_single_file does not read the export"
"$bin" export --model "$tmp/base" --format single-file --dtype fp32 --lora "$tmp/lora/pytorch_lora_weights.safetensors" \
  --out "$tmp/single_lora.safetensors" > /dev/null || fail "export --lora"
"$py" tests/reference/check_single_file.py "$tmp/single_lora.safetensors" "$tmp/base" \
  "$tmp/lora/pytorch_lora_weights.safetensors" || fail "diffusers from_single_file does not read the LoRA export"
"$bin" export --format kohya-lora --dtype fp32 --lora "$tmp/lora/pytorch_lora_weights.safetensors" --out "$tmp/kohya.safetensors" \
  > /dev/null || fail "export --format kohya-lora"
"$py" tests/reference/check_lora_loads.py "$tmp/base" "$tmp/lora/pytorch_lora_weights.safetensors" "$tmp/kohya.safetensors" ||
  fail "diffusers cannot load the kohya-format LoRA"
echo "real clients read our outputs: OK ($(( $(date +%s) - t0 )) s)"
