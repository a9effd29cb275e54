#!/usr/bin/env bash
# DreamBooth end to end, the Ray AIR example's five steps with dreambooth's commands:
#   0. a base model: ORIG_MODEL_PATH if given, else `init-model --preset $MODEL_PRESET` (random weights)
#   1. prepare the subject photos        -> $DATA_PREFIX/shards/instance*.h5
#   2. generate class images across ranks -> $IMAGES_REG_DIR
#   3. prepare the class images          -> $DATA_PREFIX/shards/class*.h5
#   4. train (prior preservation)        -> $TUNED_MODEL_DIR (a diffusers folder)
#   5. generate with the tuned model     -> $IMAGES_NEW_DIR ("photo of a unqtkn dog in a bucket")
#
# Defaults run on the CPU with the tiny `sd1-tiny` architecture in seconds; for real work set
# ORIG_MODEL_PATH to a Stable Diffusion folder and raise the counts (the Ray example: 200 class images,
# 50 PNDM steps, guidance 7.5, 800 training steps, lr 5e-6, batch 1 pair per worker).
#
# Environment (the Ray example's names where it has them):
#   DATA_PREFIX       scratch root (default /tmp/dreambooth-run; shared storage under Slurm)
#   ORIG_MODEL_PATH   base model folder in diffusers layout (default: init-model writes one)
#   MODEL_PRESET      preset for init-model when ORIG_MODEL_PATH is unset (default sd1-tiny)
#   TUNED_MODEL_DIR   output model (default $DATA_PREFIX/model-tuned)
#   IMAGES_OWN_DIR    subject photos (default: jobs/data/dog)
#   IMAGES_REG_DIR    class images (default $DATA_PREFIX/images-reg)
#   IMAGES_NEW_DIR    images of the tuned model (default $DATA_PREFIX/images-new)
#   CLASS_NAME        (dog)   UNIQUE_TOKEN (unqtkn)
#   NUM_WORKERS       MPI ranks (2); LAUNCHER overrides how ranks start (default: mpirun -np N)
#   NUM_CLASS_IMAGES  (8)  CLASS_STEPS (20)  GUIDANCE (7.5)  MAX_STEPS (40)  LR (1e-4)
#   NUM_NEW_IMAGES    (4)  RESOLUTION (model default)  SEED (0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
DB=${DREAMBOOTH:-$repo/build/dreambooth}
[ -x "$DB" ] || { echo "dreambooth_run.sh: $DB not found: run 'make' first" >&2; exit 1; }

DATA_PREFIX=${DATA_PREFIX:-/tmp/dreambooth-run}
MODEL_PRESET=${MODEL_PRESET:-sd1-tiny}
ORIG_MODEL_PATH=${ORIG_MODEL_PATH:-}
TUNED_MODEL_DIR=${TUNED_MODEL_DIR:-$DATA_PREFIX/model-tuned}
IMAGES_OWN_DIR=${IMAGES_OWN_DIR:-$here/data/dog}
IMAGES_REG_DIR=${IMAGES_REG_DIR:-$DATA_PREFIX/images-reg}
IMAGES_NEW_DIR=${IMAGES_NEW_DIR:-$DATA_PREFIX/images-new}
CLASS_NAME=${CLASS_NAME:-dog}
UNIQUE_TOKEN=${UNIQUE_TOKEN:-unqtkn}
NUM_WORKERS=${NUM_WORKERS:-2}
NUM_CLASS_IMAGES=${NUM_CLASS_IMAGES:-8}
CLASS_STEPS=${CLASS_STEPS:-20}
GUIDANCE=${GUIDANCE:-7.5}
MAX_STEPS=${MAX_STEPS:-40}
LR=${LR:-1e-4}
NUM_NEW_IMAGES=${NUM_NEW_IMAGES:-4}
SEED=${SEED:-0}
RESOLUTION=${RESOLUTION:-}
if [ -z "${LAUNCHER:-}" ]; then
  LAUNCHER="mpirun -np $NUM_WORKERS"
  [ "$(id -u)" -eq 0 ] && LAUNCHER="mpirun --allow-run-as-root --oversubscribe -np $NUM_WORKERS"
fi
res_opt=()
[ -n "$RESOLUTION" ] && res_opt=(--resolution "$RESOLUTION")

step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }
mkdir -p "$DATA_PREFIX/shards/instance" "$DATA_PREFIX/shards/class"
t0=$(date +%s)

if [ -z "$ORIG_MODEL_PATH" ]; then
  ORIG_MODEL_PATH=$DATA_PREFIX/model-orig
  step "0. base model: init-model --preset $MODEL_PRESET -> $ORIG_MODEL_PATH"
  "$DB" init-model --preset "$MODEL_PRESET" --seed "$SEED" --out "$ORIG_MODEL_PATH" --overwrite
fi

step "1. prepare the subject photos in $IMAGES_OWN_DIR"
$LAUNCHER "$DB" prepare --images "$IMAGES_OWN_DIR" --prompt "photo of $UNIQUE_TOKEN $CLASS_NAME" \
  --model "$ORIG_MODEL_PATH" --out "$DATA_PREFIX/shards/instance/instance.h5" --latents --overwrite "${res_opt[@]}"

step "2. generate $NUM_CLASS_IMAGES class images of 'photo of a $CLASS_NAME' on $NUM_WORKERS ranks"
$LAUNCHER "$DB" generate --model "$ORIG_MODEL_PATH" --prompt "photo of a $CLASS_NAME" \
  --num-images "$NUM_CLASS_IMAGES" --steps "$CLASS_STEPS" --guidance "$GUIDANCE" --seed "$SEED" \
  --out "$IMAGES_REG_DIR"

step "3. prepare the class images"
$LAUNCHER "$DB" prepare --images "$IMAGES_REG_DIR" --prompt "photo of a $CLASS_NAME" \
  --model "$ORIG_MODEL_PATH" --out "$DATA_PREFIX/shards/class/class.h5" --latents --overwrite "${res_opt[@]}"

step "4. train $MAX_STEPS steps on $NUM_WORKERS ranks"
$LAUNCHER "$DB" train --model "$ORIG_MODEL_PATH" --instance-data "$DATA_PREFIX/shards/instance" \
  --class-data "$DATA_PREFIX/shards/class" --out "$TUNED_MODEL_DIR" --max-steps "$MAX_STEPS" --lr "$LR" \
  --seed "$SEED" --overwrite

step "5. generate 'photo of a $UNIQUE_TOKEN $CLASS_NAME in a bucket' with the tuned model"
$LAUNCHER "$DB" generate --model "$TUNED_MODEL_DIR" --prompt "photo of a $UNIQUE_TOKEN $CLASS_NAME in a bucket" \
  --num-images "$NUM_NEW_IMAGES" --steps "$CLASS_STEPS" --guidance "$GUIDANCE" --seed "$SEED" \
  --out "$IMAGES_NEW_DIR"

step "done in $(( $(date +%s) - t0 )) s: tuned model $TUNED_MODEL_DIR, images $IMAGES_NEW_DIR"
