#!/usr/bin/env bash
# Installs the Debian packages dreambooth builds and tests with (Debian 12 / Ubuntu 22.04+).
# The CUDA backend additionally needs the CUDA toolkit (nvcc, cuBLAS, cuDNN, NCCL), which is not a
# Debian package here: install NVIDIA's, and `make` picks it up from PATH or /usr/local/cuda. The
# emulated kernel tests (make test-kernels) need only the toolkit's headers, no GPU.
#
# Usage: jobs/setup.sh            (as root, or with sudo available)
set -euo pipefail

packages=(
  g++ make pkg-config git
  libopenmpi-dev openmpi-bin          # MPI world, CPU gradient all-reduce
  libhdf5-dev                         # HDF5 shards (hdf5-serial)
  libboost-program-options-dev        # command line
  libpng-dev libturbojpeg0-dev libjpeg62-turbo-dev  # images
  nlohmann-json3-dev                  # configs, safetensors headers
  libicu-dev                          # tokenizer: NFC, Unicode lower-casing, \p{L} regex
  zlib1g-dev                          # the embedded CLIP vocabulary is gzip-compressed
  libopenblas-dev                     # CPU reference GEMM / convolution (cblas_sgemm via libblas.so.3)
  libblas3                            # netlib's reference libblas.so.3: what make bundle ships instead
  icu-devtools                        # icupkg, genccode: make bundle's ICU data subset (bundle_icudata.sh)
  libgtest-dev                        # tests
  libboost-context-dev                # the CUDA emulator's fibers (make test-kernels)
  clang-format                        # `make format-check`
  jq                                  # test scripts read metrics.jsonl and `compare --json`
  slurm-wlm munge                     # the Slurm test (tests/slurm/) runs a one-node Slurm
  python3 python3-venv                # CI's reference venv (tests/reference/setup_venv.sh): diffusers/h5py checks
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root or install sudo" >&2; exit 1; }
  sudo=sudo
fi

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup.sh: all ${#packages[@]} packages already installed"
  exit 0
fi
echo "setup.sh: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup.sh: done"
