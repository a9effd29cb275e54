#!/usr/bin/env bash
# CPU results stay bit-identical across refactors: trains sd1-tiny (init seed 0) for 3 steps on the
# in-repo dog photos (jobs/data/dog) in three configurations, generates from the result and the base,
# and compares every weight file and PNG with SHA-256 sums recorded at commit 09293be (before the
# device-ready-core refactor, issue 11). Configurations:
#   b: instance shard with cached latents, class shard of pixels (VAE encode per step), lr 1e-4
#   c: as b + --snr-gamma 5 --offset-noise --gradient-accumulation-steps 2 --lr-scheduler cosine
#      --gradient-checkpointing --max-grad-norm 0.01 (clipping active: the norm is ~4)
#   d: instance only, --no-train-text-encoder
# GEMM bits depend on the OpenBLAS kernel and thread count, so both are pinned (Haswell kernels run on
# any x86-64 with AVX2). A mismatch in b prints per-tensor differences against the recorded weights.
# Usage: tests/cli/train_bitident.sh BUILD_DIR
set -uo pipefail
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE=Haswell
bin="$1/dreambooth"
fx=tests/fixtures/train_bitident
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_bitident.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
run() {  # LOG COMMAND...: quiet unless it fails
  local log=$1; shift
  "$@" > "$tmp/$log" 2>&1 || { cat "$tmp/$log"; fail "$*"; }
}

run init.log "$bin" init-model --preset sd1-tiny --seed 0 --out "$tmp/base"
mkdir -p "$tmp/data"
run prep1.log "$bin" prepare --images jobs/data/dog --prompt "photo of unqtkn dog" --model "$tmp/base" \
  --out "$tmp/data/inst.h5" --latents
run prep2.log "$bin" prepare --images jobs/data/dog --prompt "photo of a dog" --model "$tmp/base" \
  --out "$tmp/data/class.h5"
common=(--model "$tmp/base" --instance-data "$tmp/data/inst.h5" --seed 7 --max-steps 3 --lr 1e-4)
run b.log "$bin" train "${common[@]}" --class-data "$tmp/data/class.h5" --out "$tmp/b"
run c.log "$bin" train "${common[@]}" --class-data "$tmp/data/class.h5" --out "$tmp/c" --snr-gamma 5 \
  --offset-noise --gradient-accumulation-steps 2 --lr-scheduler cosine --gradient-checkpointing \
  --max-grad-norm 0.01
run d.log "$bin" train "${common[@]}" --out "$tmp/d" --no-train-text-encoder
run g1.log "$bin" generate --model "$tmp/b" --prompt "photo of a unqtkn dog in a bucket" --num-images 2 \
  --steps 5 --out "$tmp/g1"
run g2.log "$bin" generate --model "$tmp/base" --prompt "a dog" --num-images 2 --steps 4 \
  --scheduler euler_ancestral --out "$tmp/g2"

if ! (cd "$tmp" && sha256sum --quiet -c "$OLDPWD/$fx/SHA256SUMS"); then
  echo "per-tensor differences of run b against the recorded weights:"
  "$bin" compare "$tmp/b/unet/diffusion_pytorch_model.safetensors" "$fx/unet.safetensors" --tol 0 | tail -n 5
  "$bin" compare "$tmp/b/text_encoder/model.safetensors" "$fx/text_encoder.safetensors" --tol 0 | tail -n 5
  fail "CPU training or generation is no longer bit-identical to the recorded results"
fi
# The recorded weights themselves (the diagnostics above) must match the recorded sums of run b.
"$bin" compare "$tmp/b/unet/diffusion_pytorch_model.safetensors" "$fx/unet.safetensors" --tol 0 > /dev/null ||
  fail "recorded unet weights differ from run b"
echo "bit-identical: 3 training runs and 4 images match the SHA-256 sums recorded before the refactor"
