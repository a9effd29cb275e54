#!/usr/bin/env bash
# Data parallelism on the emulated CUDA binary (build/emu/dreambooth --device cuda; run by
# tests/run_tests.sh, usage: tests/mpi/train_mpi_emu.sh BUILD_DIR): mpirun -np 2 with 1 pair per rank
# equals 1 rank with 2 pairs. Each rank is its own emulated device; the MPI Communicator stages the
# device gradients through the host, bucketed (--bucket-mb 0.05: several buckets per step, reduced as
# backward announces blocks) exactly as on the CPU. Same draws (keyed by the global slot), so the runs
# differ only by summation order and by bf16 activations computed in other batch groupings:
# per-step losses within 1e-3 relative, and so the global gradient norms (the loss alone would miss a
# gradient scaled wrongly: clipping and AdamW are nearly scale-invariant). 2 steps (the second from
# updated weights); measured: identical to the last digit.
# Skipped when BUILD_DIR has no emu/dreambooth.
set -uo pipefail
build=$1
emu="$build/emu/dreambooth"
[ -x "$emu" ] || { echo "no $emu: emulated data parallelism not checked"; exit 0; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/db_mpi_emu.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
np2() { timeout 120 mpirun --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS -np 2 "$@"; }

# shellcheck source=tests/mpi/tiny_data.bash
source tests/mpi/tiny_data.bash
tiny_data "$emu" "$tmp" || fail "init-model / prepare"
args=(train --device cuda --model "$tmp/base" --instance-data "$tmp/inst.h5" --class-data "$tmp/class.h5"
  --lr 1e-4 --seed 11 --progress-seconds 0 --checkpoint-every 0 --max-steps 2 --bucket-mb 0.05)
t0=$(date +%s)
np2 "$emu" "${args[@]}" --batch-size 1 --out "$tmp/two" > /dev/null 2> "$tmp/two.log" ||
  { cat "$tmp/two.log"; fail "emulated mpirun -np 2 train"; }
"$emu" "${args[@]}" --batch-size 2 --out "$tmp/one" > /dev/null 2> "$tmp/one.log" ||
  { cat "$tmp/one.log"; fail "emulated train --batch-size 2"; }
echo "emulated: 2 ranks x 1 pair vs 1 rank x 2 pairs ($(( $(date +%s) - t0 )) s):"
paste <(jq -r '"\(.loss) \(.grad_norm)"' "$tmp/two/metrics.jsonl") <(jq -r '"\(.loss) \(.grad_norm)"' "$tmp/one/metrics.jsonl") |
  sed 's/^/  loss, grad_norm: /'
[ "$(wc -l < "$tmp/two/metrics.jsonl")" = 2 ] && [ "$(wc -l < "$tmp/one/metrics.jsonl")" = 2 ] || fail "not 2 steps each"
for key in loss grad_norm; do
  worst=$(jq -n --arg k $key --slurpfile a "$tmp/two/metrics.jsonl" --slurpfile b "$tmp/one/metrics.jsonl" \
    '[range(0; $a | length) | (($a[.][$k] - $b[.][$k]) | fabs) / ($b[.][$k] | fabs)] | max')
  echo "  max relative $key difference $worst (limit 1e-3)"
  jq -n -e --argjson w "$worst" '$w <= 1e-3' > /dev/null || fail "per-step $key differs beyond 1e-3 relative: $worst"
done
echo "emulated train under mpirun -np 2: OK"
