#!/usr/bin/env bash
# The bundle's launcher (jobs/make_bundle.sh copies it to <bundle>/run).
#
#   bundle/run NAME [ARGS...]   run bin/NAME (dreambooth, dreambooth_tests, gpu_kernel_tests, ...); test
#                               binaries run in the repository checkout ($DB_REPO_DIR, else .: see below)
#   bundle/run gpu_check [DIR]  jobs/gpu_check.sh: the whole GPU check, results in DIR ($OUT or ./gpu_check_out)
#   bundle/run --env            print the environment it sets (eval-able)
#
# Library path: bundle/lib first, then the CUDA libraries: $DB_CUDA_LIB_DIRS (colon-separated) if set, else
# every nvidia/*/lib folder of the PyTorch environment's python ($DB_PYTHON, default python3: pip's
# nvidia-cublas, nvidia-cudnn-cu13, nvidia-nccl-cu13 ...), then /usr/local/cuda/lib64 and the driver's
# folder. Only bin/NAME gets this LD_LIBRARY_PATH: python and the machine's tools keep their own
# libraries (bundle/lib holds Debian 12's libstdc++, older than a newer distribution's).
set -euo pipefail
B="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

cuda_dirs() {
  if [[ -n "${DB_CUDA_LIB_DIRS:-}" ]]; then
    echo "$DB_CUDA_LIB_DIRS"
    return
  fi
  local py="${DB_PYTHON:-python3}" dirs=""
  if command -v "$py" >/dev/null 2>&1; then
    dirs=$("$py" - <<'PY' 2>/dev/null || true
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
out = []
for r in roots:
    for d in sorted(glob.glob(os.path.join(r, "*", "lib"))):
        if glob.glob(os.path.join(d, "*.so*")):
            out.append(d)
print(":".join(out))
PY
    )
  fi
  for d in /usr/local/cuda/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [[ -d "$d" ]] && dirs="${dirs:+$dirs:}$d"
  done
  echo "$dirs"
}

setup_env() {
  local cuda
  cuda="$(cuda_dirs)"
  export LD_LIBRARY_PATH="$B/lib${cuda:+:$cuda}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # Open MPI and PMIx find their components and help texts under these prefixes (the Debian layout,
  # kept inside mpi/). The Debian /etc/openmpi defaults are repeated here: that file is not relocated.
  local mpi_prefix pmix_prefix
  mpi_prefix=$(ls -d "$B"/mpi/usr 2>/dev/null || true)
  pmix_prefix=$(ls -d "$B"/mpi/usr/lib/*/pmix2 2>/dev/null | head -1 || true)
  [[ -n "$mpi_prefix" ]] && export OPAL_PREFIX="$mpi_prefix"
  [[ -n "$pmix_prefix" ]] && export PMIX_INSTALL_PREFIX="$pmix_prefix"
  export OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_mca_base_component_show_load_errors=0
  export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader,tcp}" OMPI_MCA_pml="${OMPI_MCA_pml:-ob1}"
  export OMPI_MCA_mtl="${OMPI_MCA_mtl:-^ofi,psm,psm2}" OMPI_MCA_osc="${OMPI_MCA_osc:-^ucx,pt2pt}"
  # A plain `dreambooth ...` is an MPI singleton; without this, Open MPI 4 forks an orted daemon for it,
  # which the bundle does not carry (one machine, one rank per process started here).
  export OMPI_MCA_ess_singleton_isolated="${OMPI_MCA_ess_singleton_isolated:-1}"
  # Running as root (device machines, CI containers) is refused by mpirun only; harmless here.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
}

# The CUDA sonames the binaries were linked against (MANIFEST) and whether the library path has them:
# a PyTorch built for CUDA 12 (cu12 wheels: libcublasLt.so.12) cannot satisfy libcublasLt.so.13.
check_cuda_sonames() {
  local missing="" so d found
  for so in $(sed -n 's/^needs from the PyTorch environment[^:]*: //p' "$B/MANIFEST" 2>/dev/null); do
    [[ "$so" == libcuda.so* ]] && continue
    found=""
    IFS=: read -ra ds <<<"$LD_LIBRARY_PATH"
    for d in "${ds[@]}"; do [[ -e "$d/$so" ]] && found=1 && break; done
    [[ -z "$found" ]] && missing="$missing $so"
  done
  if [[ -n "$missing" ]]; then
    echo "run: warning: not found on the library path:$missing (the bundle was built against CUDA 13;" \
      "a cu12 PyTorch environment has .so.12 cuBLAS: set DB_CUDA_LIB_DIRS to CUDA 13 libraries)" >&2
  fi
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
  "" | -h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    echo "binaries: $(ls "$B/bin" | tr '\n' ' ')"
    ;;
  --env)
    setup_env
    for v in LD_LIBRARY_PATH OPAL_PREFIX PMIX_INSTALL_PREFIX; do echo "export $v='${!v:-}'"; done
    env | grep '^OMPI_MCA_' | sed "s/^\([^=]*\)=\(.*\)/export \1='\2'/"
    ;;
  gpu_check)
    exec "$B/repo/jobs/gpu_check.sh" "$@"
    ;;
  *)
    [[ -x "$B/bin/$cmd" ]] || {
      echo "run: no binary $cmd in $B/bin ($(ls "$B/bin" | tr '\n' ' '))" >&2
      exit 127
    }
    setup_env
    check_cuda_sonames
    # Test binaries read tests/golden and tests/fixtures relative to the repository root, which the
    # bundle does not carry: $DB_REPO_DIR, else the current directory (the device tool runs in the
    # repository checkout).
    case "$cmd" in
      *_tests)
        repo="${DB_REPO_DIR:-$PWD}"
        if [[ -d "$repo/tests/golden" ]]; then
          cd "$repo"
        else
          echo "run: warning: no tests/golden in ${DB_REPO_DIR:+\$DB_REPO_DIR=}$repo: run $cmd from the" \
            "repository checkout or set DB_REPO_DIR; the golden and fixture tests will fail" >&2
        fi
        ;;
    esac
    exec "$B/bin/$cmd" "$@"
    ;;
esac
