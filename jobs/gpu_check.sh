#!/usr/bin/env bash
# The GPU check: everything worth knowing from a lent GPU, in one command, under 8 minutes of wall time.
#
#   tar xf build/bundle.tar.xz && bundle/run gpu_check [RESULTS_DIR]
#
# RESULTS_DIR: $OUT when set (the device tool brings it back), else ./gpu_check_out. Writes three files
# there (the device tool returns at most 8): summary.md (one table), summary.json (every part's status,
# time and figures, the benches' JSON) and logs.txt (every part's output, in order).
#
# Parts, each under its own timeout and all under one budget (DB_GPU_CHECK_BUDGET seconds, default 420):
# a part that would overrun the budget gets what is left, or is skipped. A failing part never stops the
# next. Order = priority: the machine (glibc >= the bundle's need, first; driver, nvidia-smi, torch),
# `dreambooth info`, the CUDA test suites, compute-sanitizer memcheck on a small subset, bench_step sd15
# and its PyTorch counterpart without and with gradient checkpointing (2 warm-up + 3 steps), bench_kernels.
# Never resets or reconfigures the GPU (no nvidia-smi -r/-pm/-lgc, no clock control in any tool).
set -uo pipefail
B="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"  # the bundle: <bundle>/repo/jobs/gpu_check.sh
REPO="$B/repo"
RUN="$B/run"
DIR="${1:-${OUT:-./gpu_check_out}}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"
BUDGET="${DB_GPU_CHECK_BUDGET:-420}"
START=$(date +%s)
RECORDS="$WORK/records.tsv"
LOGS="$DIR/logs.txt"
: >"$RECORDS"
: >"$LOGS"
PY="${DB_PYTHON:-python3}"

# part NAME TIMEOUT CMD...: runs CMD with its output in $WORK/NAME.log, appends the log to logs.txt and a
# record (name, status, rc, seconds) to records.tsv. Status: pass, FAIL (rc), timeout, skipped (budget).
part() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - ($(date +%s) - START) - 5))
  ((left < limit)) && limit=$left
  local log="$WORK/$name.log" t0 rc status
  if ((limit < 10)); then
    printf '%s\tskipped (budget)\t-\t0\n' "$name" >>"$RECORDS"
    echo "== $name: skipped, $left s of the budget left" | tee -a "$LOGS"
    return 0
  fi
  echo "== $name (timeout ${limit} s): $*" | tee -a "$LOGS"
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" >"$log" 2>&1
  rc=$?
  local secs
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=pass ;;
    124 | 137) status=timeout ;;
    *) status="FAIL" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" >>"$RECORDS"
  cat "$log" >>"$LOGS"
  echo "== $name: $status (rc $rc, $secs s)" | tee -a "$LOGS"
  tail -3 "$log"
  return 0
}

# ---- the machine ----------------------------------------------------------------------------------------
machine() {
  echo "bundle: $(head -1 "$B/MANIFEST")"
  local need have
  need=$(sed -n 's/^needs: x86-64 Linux with glibc >= \([0-9.]*\).*/\1/p' "$B/MANIFEST")
  have=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
  echo "glibc: $have (bundle needs >= $need)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); kernel $(uname -r); $(nproc) cores"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv 2>&1 || echo "nvidia-smi failed"
  nvidia-smi 2>&1 | head -20
  command -v nvcc >/dev/null && nvcc --version | tail -2
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "gpu", torch.cuda.is_available())' 2>&1
  "$RUN" --env | grep -E 'LD_LIBRARY_PATH|OPAL_PREFIX'
  for so in libcublasLt.so.13 libcudnn.so.9; do
    echo "$so: $(IFS=:; for d in $("$RUN" --env | sed -n "s/^export LD_LIBRARY_PATH='\(.*\)'/\1/p"); do [ -e "$d/$so" ] && echo "$d" && break; done)"
  done
  [[ -n "$have" && -n "$need" ]] && [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" == "$need" ]]
}
export -f machine
export B REPO RUN PY
part machine 30 machine
part info 60 "$RUN" dreambooth info

# ---- tests on the device --------------------------------------------------------------------------------
part cuda_host_tests 60 "$RUN" cuda_host_tests
part gpu_kernel_tests 90 "$RUN" gpu_kernel_tests
part gpu_cuda_tests 120 "$RUN" gpu_cuda_tests
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
if [[ -n "$SANITIZER" ]]; then
  # A small subset: memcheck slows kernels 10-100x. Goes through `run` so that the sanitizer itself keeps
  # the machine's libraries (the bundle's LD_LIBRARY_PATH is set for the test binary only).
  part memcheck 90 "$SANITIZER" --tool memcheck --target-processes all --error-exitcode 3 \
    "$RUN" gpu_kernel_tests --gtest_filter='KernelLayout*:KernelEmbedding*:KernelLayerNorm*:KernelTrainStep*:KernelAttentionMmaFwd*'
else
  printf 'memcheck\tskipped (no compute-sanitizer)\t-\t0\n' >>"$RECORDS"
fi

# ---- bench_step and the PyTorch side by side ----------------------------------------------------------
"$RUN" bench_step --count-only --json "$WORK/count.json" >"$WORK/count.log" 2>&1
MODEL_TFLOP=$("$PY" -c "import json; print(json.load(open('$WORK/count.json'))['model_tflop_per_step'])" 2>/dev/null || echo 0)
echo "model TFLOP per step (bench_step --count-only): $MODEL_TFLOP" | tee -a "$LOGS"
SITE="$WORK/site"
if ls "$B"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$B"/wheels/*.whl >>"$LOGS" 2>&1 ||
    echo "pip install of the bundle's wheels failed" | tee -a "$LOGS"
fi
torch_step() { PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 "$PY" "$REPO/bench/step_torch.py" "$@"; }
export -f torch_step
export SITE
part bench_step 100 "$RUN" bench_step --device cuda --preset sd15 --warmup 2 --steps 3 --json "$WORK/bench_step.json"
part step_torch 100 torch_step --device cuda --preset sd15 --warmup 2 --steps 3 --model-tflop "$MODEL_TFLOP" --json "$WORK/step_torch.json"
part bench_step_ckpt 100 "$RUN" bench_step --device cuda --preset sd15 --warmup 2 --steps 3 --gradient-checkpointing \
  --json "$WORK/bench_step_ckpt.json"
part step_torch_ckpt 100 torch_step --device cuda --preset sd15 --warmup 2 --steps 3 --gradient-checkpointing \
  --model-tflop "$MODEL_TFLOP" --json "$WORK/step_torch_ckpt.json"
if [[ -x "$B/bin/bench_kernels" ]]; then
  # % of peak against the bf16 GEMM peak bench_step measured on this GPU, when it ran.
  PEAK=$("$PY" -c "import json; print(json.load(open('$WORK/bench_step.json'))['gemm_peak_tflops'])" 2>/dev/null || true)
  part bench_kernels 90 "$RUN" bench_kernels ${PEAK:+--peak-tflops "$PEAK"} --json "$WORK/bench_kernels.json"
else
  printf 'bench_kernels\tskipped (not in this bundle)\t-\t0\n' >>"$RECORDS"
fi
# PyTorch's SDPA at the same attention shapes (bench_kernels' attention rows beside it).
attn_torch() { PYTHONUNBUFFERED=1 "$PY" "$REPO/bench/attention_torch.py" "$@"; }
export -f attn_torch
part attention_torch 60 attn_torch --device cuda --json "$WORK/attention_torch.json"

# ---- summary ----------------------------------------------------------------------------------------------
TOTAL=$(($(date +%s) - START))
"$PY" - "$WORK" "$DIR" "$TOTAL" "$B/MANIFEST" <<'PY' || {
import json, os, re, sys
work, out, total, manifest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows, summary = [], {"total_s": total, "bundle": open(manifest).readline().strip(), "parts": []}

def load(name):
    p = os.path.join(work, name + ".json")
    try:
        return json.load(open(p))
    except Exception:
        return None

def gtest(log):
    passed = re.findall(r"\[  PASSED  \] (\d+) test", log)
    failed = re.findall(r"(\d+) FAILED TEST", log)
    s = f"{passed[-1]} passed" if passed else ""
    if failed:
        s += f", {failed[-1]} failed"
    errs = re.findall(r"ERROR SUMMARY: (\d+) error", log)
    if errs:
        s += f", sanitizer: {errs[-1]} errors"
    return s

def bench(j):
    if not j:
        return ""
    s = f"{j['step_time_s_mean']:.3f} s/step, {j['samples_per_s']:.2f} samples/s"
    if j.get("achieved_tflops"):
        s += f", {j['achieved_tflops']:.0f} TFLOP/s, MFU {100 * j['mfu']:.1f}% of {j['gemm_peak_tflops']:.0f}"
    return s + f", peak {j['peak_mem_mib'] / 1024:.1f} GiB"

for line in open(os.path.join(work, "records.tsv")):
    name, status, rc, secs = line.rstrip("\n").split("\t")
    log_path = os.path.join(work, name + ".log")
    log = open(log_path, errors="replace").read() if os.path.exists(log_path) else ""
    j = load(name)
    figure = bench(j) if name.startswith(("bench_step", "step_torch")) else gtest(log)
    if name == "machine":
        figure = "; ".join(l for l in log.splitlines() if l.startswith(("glibc:", "python ")))[:160]
    if name == "info" and log:
        figure = log.strip().splitlines()[-1][:120]
    if not figure and status not in ("pass",) and log.strip():
        lines = log.strip().splitlines()
        why = [l for l in lines if re.search(r"error|fail|no CUDA|no usable|not found|Error", l)]
        figure = (why or lines)[-1][:150]  # why it failed, in one line
    rows.append((name, status, secs, figure))
    summary["parts"].append({"name": name, "status": status, "rc": rc, "seconds": secs, "figure": figure, "json": j})
for ours, theirs in (("bench_step", "step_torch"), ("bench_step_ckpt", "step_torch_ckpt")):
    a, b = load(ours), load(theirs)
    if a and b:
        r = b["step_time_s_mean"] / a["step_time_s_mean"]
        rows.append((f"{theirs} / {ours}", "", "", f"PyTorch step time / ours = {r:.2f} (> 1: ours faster)"))
        summary[f"ratio_{theirs}_over_{ours}"] = r
kj = load("bench_kernels")
if kj is not None:
    summary["bench_kernels"] = kj
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(f"GPU check, {summary['bundle']}; {total} s in all\n\n")
    f.write("| part | status | s | result |\n|---|---|---:|---|\n")
    for r in rows:
        f.write("| " + " | ".join(str(x).replace("|", "/") for x in r) + " |\n")
PY
  { echo "| part | status | rc | s |"; echo "|---|---|---|---|"; sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$RECORDS"; } >"$DIR/summary.md"
  echo "{}" >"$DIR/summary.json"
}
cat "$DIR/summary.md"
# Exit status: 0 when every part that ran passed.
failed=$(grep -cP '\t(FAIL|timeout)\t' "$RECORDS")
rm -rf "$WORK"
echo "gpu_check: $failed part(s) failed or timed out; results in $DIR"
[[ "$failed" == 0 ]]
