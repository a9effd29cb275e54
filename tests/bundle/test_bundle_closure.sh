#!/usr/bin/env bash
# Proves that build/bundle/ (make bundle) carries every library it needs, without a GPU: a minimal Debian
# root made by debootstrap (minbase: glibc, bash, coreutils; none of our -dev or runtime packages), the
# bundle copied in (with the repository's tests/ beside it at /repo, as the device tool sends the
# checkout: the bundle carries no test data), and from a chroot:
#   - ldd of every binary, library and Open MPI/PMIx component finds everything (no "not found");
#   - `run dreambooth info` (an MPI singleton: every subcommand runs in an MPI world);
#   - a CPU test subset of dreambooth_tests (tokenizer/ICU's data subset, safetensors, images/png+jpeg,
#     HDF5 shards, golden forwards/netlib BLAS) and cuda_host_tests (cuBLASLt/cuDNN descriptors, no GPU
#     needed), run from /repo;
#   - `init-model`, `prepare --latents`, `train` (3 steps) tiny on the CPU;
#   - gpu_kernel_tests without a GPU: exit 2 and one line;
#   - the folder under 60 MiB (issue 14: what a lent GPU's device tool can carry beside the checkout).
# The CUDA libraries (libcublasLt.so.13, libcudnn.so.9: the PyTorch environment's on a GPU machine) come
# from this machine's CUDA toolkit, bind-mounted read-only at /opt/cuda-libs (DB_CUDA_LIB_DIRS).
#
#   tests/bundle/test_bundle_closure.sh [BUILD_DIR]      (root; needs debootstrap; CI runs it, make test not)
#   tests/bundle/test_bundle_closure.sh --prepare-root   (only make the cached root: CI starts it early,
#                                                         in the background, while it builds)
#
# The root is cached in $DB_BUNDLE_ROOT (default /var/cache/dreambooth/root-bookworm): the first run
# downloads ~40 MB of packages (~3 min), later runs reuse it (~1 min in all).
set -euo pipefail
cd "$(dirname "$0")/../.."
prepare_only=0
if [[ "${1:-}" == --prepare-root ]]; then
  prepare_only=1
  shift
fi
BUILD="${1:-build}"
BUNDLE="$BUILD/bundle"
ROOT="${DB_BUNDLE_ROOT:-/var/cache/dreambooth/root-bookworm}"
CUDA_LIB="${CUDA_HOME:-/usr/local/cuda}/lib64"
start=$(date +%s)
say() { echo "[bundle_closure] $*"; }
fail() {
  echo "[bundle_closure] FAIL: $*" >&2
  exit 1
}

[[ $(id -u) == 0 ]] || fail "needs root (debootstrap, chroot, mount)"
[[ $prepare_only == 1 || -x "$BUNDLE/run" ]] || fail "$BUNDLE/run missing: make bundle first"
command -v debootstrap >/dev/null || fail "debootstrap missing (apt-get install debootstrap)"

if [[ ! -x "$ROOT/bin/bash" ]]; then
  # The machine's own Debian mirror when apt names one (deb822 or one-line sources), else debootstrap's.
  mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [[ -z "$mirror" ]] && mirror=$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  say "debootstrap --variant=minbase bookworm $ROOT ${mirror:-(default mirror)} (once; cached)"
  rm -rf "$ROOT.tmp"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase bookworm "$ROOT.tmp" ${mirror:+"$mirror"} >"$ROOT.log" 2>&1 ||
    { tail -20 "$ROOT.log"; fail "debootstrap"; }
  mv "$ROOT.tmp" "$ROOT"
fi
[[ $prepare_only == 1 ]] && { say "root ready: $ROOT"; exit 0; }

mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" || true; done
  rm -rf "$ROOT/bundle" "$ROOT/work" "$ROOT/repo"
}
trap cleanup EXIT
rm -rf "$ROOT/bundle" "$ROOT/work" "$ROOT/repo"
cp -a "$BUNDLE" "$ROOT/bundle"
mkdir -p "$ROOT/repo"
cp -r tests "$ROOT/repo/"
mkdir -p "$ROOT/work" "$ROOT/opt/cuda-libs" "$ROOT/proc" "$ROOT/sys"
cp -r tests/fixtures/images "$ROOT/work/images"
mount -t proc proc "$ROOT/proc" && mounts+=("$ROOT/proc")
mount --bind /sys "$ROOT/sys" && mounts+=("$ROOT/sys")  # hwloc (Open MPI) reads the CPU topology there
mount --bind "$CUDA_LIB" "$ROOT/opt/cuda-libs" && mounts+=("$ROOT/opt/cuda-libs")
mount -o remount,bind,ro "$ROOT/opt/cuda-libs"

# Everything below runs inside the minimal root, with a clean environment.
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/work DB_CUDA_LIB_DIRS=/opt/cuda-libs \
    /bin/bash -c "$1"
}
say "root: $(in_root 'getconf GNU_LIBC_VERSION; dpkg-query -W | wc -l' | tr '\n' ' ')packages; no python: $(in_root 'command -v python3 || echo yes')"

say "ldd of every binary, library and component"
missing=$(in_root 'eval "$(/bundle/run --env)"; cd /bundle; for f in bin/* lib/*.so* $(find mpi -name "*.so"); do
  ldd "$f" 2>&1 | grep "not found" | sed "s|^|$f: |"; done | sort -u')
[[ -z "$missing" ]] || fail "unresolved libraries: $missing"

say "run dreambooth info (MPI singleton)"
out=$(in_root '/bundle/run dreambooth info 2>&1') || fail "dreambooth info: $out"
echo "$out" | sed 's/^/  /'
grep -q "^dreambooth " <<<"$out" || fail "info printed no version line"

# passed: shows its input and succeeds when it ends with the test binary's exit status 0, which the
# commands below print after the last lines of its output (GoogleTest prints a PASSED line for the tests
# that passed even when others failed). (Not `tee /dev/stderr`: tee opens /dev/stderr with O_TRUNC,
# which empties a log file that stderr is redirected to, e.g. CI's.)
passed() {
  local out
  out=$(cat)
  printf '%s\n' "$out"
  [[ "$(tail -1 <<<"$out")" == "exit status 0" ]]
}
say "dreambooth_tests: a CPU subset (ICU, safetensors, png/jpeg, HDF5, golden forwards through netlib BLAS)"
in_root 'cd /repo && /bundle/run dreambooth_tests --gtest_brief=1 \
  --gtest_filter="Tokenizer.*:Safetensors.*:Image.*:Shard.*:Presets/ForwardGolden.*:GoldenManifest.*" 2>&1 | tail -3; echo "exit status ${PIPESTATUS[0]}"' |
  passed || fail "dreambooth_tests subset"
say "cuda_host_tests (cuBLASLt/cuDNN descriptors, no GPU)"
in_root 'cd /repo && /bundle/run cuda_host_tests --gtest_brief=1 2>&1 | tail -3; echo "exit status ${PIPESTATUS[0]}"' | passed ||
  fail "cuda_host_tests"

say "init-model, prepare --latents, train 3 steps on the CPU"
in_root 'set -e; cd /work; r=/bundle/run
  mkdir -p inst class; cp images/exif1_le_60x34.jpg images/gray_77x99.jpg inst/; cp images/cmyk_53x41.jpg class/
  $r dreambooth init-model --preset sd1-tiny --seed 3 --out base >/dev/null 2>&1
  $r dreambooth prepare --images inst --prompt "photo of unqtkn dog" --model base --latents --device cpu --out inst.h5 2>prep.log
  $r dreambooth prepare --images class --prompt "photo of a dog" --model base --latents --device cpu --out class.h5 2>>prep.log
  $r dreambooth train --model base --instance-data inst.h5 --class-data class.h5 --seed 7 --lr 1e-4 \
    --progress-seconds 0 --device cpu --max-steps 3 --checkpoint-every 0 --out out 2>train.log
  test -s out/metrics.jsonl && echo "  metrics.jsonl: $(wc -l <out/metrics.jsonl) lines"' ||
  { in_root 'tail -5 /work/prep.log /work/train.log' || true; fail "tiny CPU job"; }

say "gpu_kernel_tests with no GPU: one line, exit 2"
set +e
out=$(in_root 'cd /repo && /bundle/run gpu_kernel_tests 2>&1')
rc=$?
set -e
echo "  rc $rc: $out"
[[ $rc == 2 && $(wc -l <<<"$out") == 1 ]] || fail "gpu_kernel_tests without a GPU: rc $rc, $(wc -l <<<"$out") lines"

size=$(du -sb "$BUNDLE" | cut -f1)
say "size: $size bytes ($((size >> 20)) MiB)"
((size < 60 << 20)) || fail "$BUNDLE is $((size >> 20)) MiB, not under 60 MiB"

say "passed in $(($(date +%s) - start)) s"
