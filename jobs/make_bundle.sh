#!/usr/bin/env bash
# make bundle: one relocatable folder for a GPU machine that has none of our Debian packages, only a
# PyTorch environment (whose pip nvidia-* packages provide cuBLAS, cuDNN and NCCL) and the NVIDIA driver.
#
#   jobs/make_bundle.sh [BUILD_DIR]        (default build; `make bundle` builds the binaries first)
#
# Writes BUILD_DIR/bundle/ and BUILD_DIR/bundle.tar.xz:
#   run            the launcher: `bundle/run NAME [ARGS]` runs bin/NAME with lib/ and the PyTorch env's
#                  nvidia-* library folders on LD_LIBRARY_PATH and Open MPI relocated into mpi/;
#                  `bundle/run gpu_check` runs jobs/gpu_check.sh; `bundle/run --env` prints the settings
#   bin/           dreambooth, dreambooth_tests, gpu_kernel_tests, gpu_cuda_tests, cuda_host_tests,
#                  bench_step (and bench_kernels when built): BUILD/shared/bin/*, debug info stripped, all
#                  linked against lib/libdreambooth.so (core, CUDA backend, kernels, cudart, HDF5; Makefile)
#   lib/           libdreambooth.so and every shared library it, the binaries and Open MPI's components
#                  need (from ldd), except glibc's own (the machine's, >= the version in MANIFEST) and the
#                  CUDA libraries (the driver's libcuda, cuBLAS(Lt), cuDNN, NCCL: from the PyTorch
#                  environment) but the CUDA runtime, libcudart.so (the toolkit's: the one runtime of
#                  libdreambooth.so and the test binaries' own kernels). Two are swapped for smaller ones with the
#                  same soname: libblas.so.3 is netlib's reference BLAS (Debian's libblas3; the build
#                  machine's alternative is OpenBLAS, 36 MB with libgfortran), libicudata.so.NN a subset
#                  of ICU's data (jobs/bundle_icudata.sh)
#   mpi/           Open MPI's components and help texts at its install layout (OPAL_PREFIX=mpi/usr)
#   repo/          what the scripts read relative to the repository root: src/models/presets,
#                  jobs/gpu_check.sh, bench/step_torch.py, bench/attention_torch.py. Not tests/: the test
#                  binaries read tests/golden and tests/fixtures from the repository checkout, which `run`
#                  finds in $DB_REPO_DIR or the current directory (the device tool runs in the checkout)
#   wheels/        diffusers and its pure-python dependencies missing from a PyTorch environment
#   MANIFEST       versions, sizes, glibc needed, CUDA sonames expected
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
OUT="$BUILD/bundle"
say() { echo "[make_bundle] $*"; }

SHARED="$BUILD/shared"
BINS=(dreambooth dreambooth_tests gpu_kernel_tests gpu_cuda_tests cuda_host_tests bench_step)
[[ -x "$SHARED/bin/bench_kernels" ]] && BINS+=(bench_kernels)
for f in "${BINS[@]/#/bin/}" lib/libdreambooth.so; do
  [[ -e "$SHARED/$f" ]] || { echo "make_bundle: $SHARED/$f missing (make -j bundle builds it; needs nvcc)" >&2; exit 1; }
done
NETLIB_BLAS=/usr/lib/$(gcc -print-multiarch)/blas/libblas.so.3
[[ -f "$NETLIB_BLAS" ]] || { echo "make_bundle: $NETLIB_BLAS missing (apt-get install libblas3; jobs/setup.sh)" >&2; exit 1; }
ICU_MAJOR=$(pkg-config --modversion icu-uc | cut -d. -f1)
ICU_DATA="$(pkg-config --variable=libdir icu-uc)/libicudata.so.$ICU_MAJOR"

rm -rf "$OUT" "$BUILD/bundle.tar.xz"
mkdir -p "$OUT/bin" "$OUT/lib" "$OUT/repo" "$OUT/wheels"

# --- binaries, debug info stripped (the build uses -g; symbols stay for backtraces) -------------------
for b in "${BINS[@]}"; do
  strip --strip-debug -o "$OUT/bin/$b" "$SHARED/bin/$b"
done
cp "$SHARED/lib/libdreambooth.so" "$OUT/lib/"
cp -L "$NETLIB_BLAS" "$OUT/lib/libblas.so.3"
jobs/bundle_icudata.sh "$ICU_DATA" "$OUT/lib/libicudata.so.$ICU_MAJOR"

# --- Open MPI: components (dlopen'ed from its pkglibdir) and help/data files, at the install layout ------
# Open MPI finds them under OPAL_PREFIX with the configure-time layout (ompi_info --path all). Components
# whose libraries are not bundled (InfiniBand/UCX/OFI/PSM transports, useless on one machine) are left out.
MPI_LIBDIR=$(ompi_info --path libdir --parsable | sed -n 's/^path:libdir://p')
MPI_PKGLIBDIR=$(ompi_info --path pkglibdir --parsable | sed -n 's/^path:pkglibdir://p')
MPI_PKGDATADIR=$(ompi_info --path pkgdatadir --parsable | sed -n 's/^path:pkgdatadir://p')
MPI_PREFIX=$(ompi_info --path prefix --parsable | sed -n 's/^path:prefix://p')
SKIP_MCA='ucx|ofi|verbs|openib|psm|usnic|uct|ucc|hcoll|fca|portals|cuda|java|memchecker|ompio_monitor|monitoring'
mkdir -p "$OUT/mpi$MPI_PKGLIBDIR" "$OUT/mpi$MPI_PKGDATADIR"
for f in "$MPI_PKGLIBDIR"/mca_*.so; do
  [[ "$(basename "$f")" =~ $SKIP_MCA ]] && continue
  cp "$f" "$OUT/mpi$MPI_PKGLIBDIR/"
done
cp -r "$MPI_PKGDATADIR/." "$OUT/mpi$MPI_PKGDATADIR/"
# PMIx (external to Open MPI, with its own plugin and help folders; PMIX_INSTALL_PREFIX relocates it).
PMIX_ROOT=$(ldd "$MPI_PKGLIBDIR"/mca_pmix_ext3x.so 2>/dev/null | awk '/libpmix/ {print $3}' | xargs -r readlink -f | xargs -r dirname | xargs -r dirname)
if [[ -n "$PMIX_ROOT" && -d "$PMIX_ROOT/lib/pmix" ]]; then
  mkdir -p "$OUT/mpi$PMIX_ROOT/lib/pmix"
  cp "$PMIX_ROOT"/lib/pmix/*.so "$OUT/mpi$PMIX_ROOT/lib/pmix/"
  [[ -d "$PMIX_ROOT/share" ]] && cp -r "$PMIX_ROOT/share" "$OUT/mpi$PMIX_ROOT/"
fi

# --- the library closure: ldd of every binary and component ------------------------------------------
# Not bundled: glibc (libc, libm, libpthread, libdl, librt, libresolv, the loader: always the machine's
# own), and the CUDA libraries, which must match the driver and come from the PyTorch environment;
# libcudart (0.7 MB) is bundled: it is the build's own toolkit version.
# lib/ comes first on the search path, so that the libraries placed there above (BLAS, ICU data) stand in
# for the machine's and their dependencies (OpenBLAS's libgfortran) are not copied.
SYSTEM='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libutil\.so|libnsl)'
CUDA_LIBS='^(libcuda\.so|libcublas|libcudnn|libnccl|libnvrtc|libnvJitLink|libcufft|libcurand|libcusparse|libcusolver|libnvToolsExt)'
objects=("$OUT"/bin/* "$OUT"/lib/*.so* "$OUT"/mpi"$MPI_PKGLIBDIR"/*.so)
[[ -n "$PMIX_ROOT" && -d "$OUT/mpi$PMIX_ROOT/lib/pmix" ]] && objects+=("$OUT/mpi$PMIX_ROOT"/lib/pmix/*.so)
declare -A seen=()
cuda_needed=()
for o in "${objects[@]}"; do
  while read -r name _ path _; do
    [[ "$name" =~ $SYSTEM ]] && continue
    if [[ "$name" =~ $CUDA_LIBS ]]; then
      cuda_needed+=("$name")
      continue
    fi
    [[ -z "${seen[$name]:-}" && -f "$path" && ! -e "$OUT/lib/$name" ]] || continue
    seen[$name]=1
    cp -L "$path" "$OUT/lib/$name"
  done < <(LD_LIBRARY_PATH="$OUT/lib:$MPI_LIBDIR" ldd "$o" | grep '=> /')
done
# libmpi's own folder (Debian keeps the real files in $MPI_LIBDIR) is found through lib/ too.
strip --strip-debug "$OUT"/lib/*.so* 2>/dev/null || true
chmod -R u+w "$OUT"

# --- data and scripts the tests and the GPU check read, at their repository paths ----------------------
mkdir -p "$OUT/repo/src/models" "$OUT/repo/jobs" "$OUT/repo/bench"
cp -r src/models/presets "$OUT/repo/src/models/"
cp jobs/gpu_check.sh "$OUT/repo/jobs/"
cp bench/step_torch.py bench/attention_torch.py "$OUT/repo/bench/"
cp jobs/bundle_run.sh "$OUT/run"
chmod +x "$OUT/run" "$OUT/repo/jobs/gpu_check.sh"

# --- diffusers (the GPU machine has torch and transformers, not diffusers) -----------------------------
# Pure-python wheels, pinned as in tests/reference/requirements.txt; cached in BUILD/wheels (pip needs
# PyPI once). importlib_metadata and lazy-importer are diffusers' needs that a PyTorch image lacks.
WHEELS="$BUILD/wheels"
mkdir -p "$WHEELS"
pin() { sed -n "s/^$1==//p" tests/reference/requirements.txt; }
for spec in "diffusers==$(pin diffusers)" "importlib_metadata==$(pin importlib_metadata)" \
  "lazy-importer==$(pin lazy-importer)"; do
  name=${spec%%==*} ver=${spec#*==}
  if ! ls "$WHEELS"/"${name//-/_}"-"$ver"-*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$spec" ||
      say "warning: could not download $spec (no PyPI?): the GPU check's PyTorch side-by-side will be skipped"
  fi
  cp "$WHEELS"/"${name//-/_}"-"$ver"-*.whl "$OUT/wheels/" 2>/dev/null || true
done

# --- manifest: versions, sizes, what the machine must provide ------------------------------------------
glibc_max=$(for f in "$OUT"/bin/* "$OUT"/lib/*; do objdump -T "$f" 2>/dev/null; done |
  grep -o 'GLIBC_2\.[0-9]*' | sort -t. -k2,2n -u | tail -1)
{
  echo "dreambooth bundle $(git describe --always --dirty 2>/dev/null || echo unknown), built $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "needs: x86-64 Linux with glibc >= ${glibc_max#GLIBC_} (highest symbol version used: $glibc_max)"
  echo "needs from the PyTorch environment (pip nvidia-*) or the CUDA toolkit: $(printf '%s\n' "${cuda_needed[@]}" | sort -u | tr '\n' ' ')"
  echo "needs: an NVIDIA driver for CUDA $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p') or newer (lib/ carries its libcudart)"
  echo "Open MPI $(ompi_info --version 2>/dev/null | sed -n 's/^Open MPI v//p'): OPAL_PREFIX=<bundle>/mpi$MPI_PREFIX (set by run)"
  echo
  echo "needs: the repository checkout's tests/ (golden, fixtures) for the test binaries: run looks in \$DB_REPO_DIR, then ."
  echo "BLAS: lib/libblas.so.3 is netlib's reference BLAS (Debian libblas3 $(dpkg-query -W -f='${Version}' libblas3 2>/dev/null)), not OpenBLAS"
  echo "ICU data: lib/libicudata.so.$ICU_MAJOR holds a subset (jobs/bundle_icudata.sh)"
  echo
  echo "sizes (bytes, du -sb):"
  (cd "$OUT" && du -sb bin lib mpi repo wheels | sed 's/^/  /' && du -sb . | sed 's/^/  total /')
  echo
  (cd "$OUT" && du -b bin/* lib/libdreambooth.so | sed 's/^/  /')
} >"$OUT/MANIFEST"
size_mib=$(du -sm "$OUT" | cut -f1)
tar -C "$BUILD" -cf - bundle | xz -T0 -6 >"$BUILD/bundle.tar.xz"
say "$OUT: ${size_mib} MiB; $BUILD/bundle.tar.xz: $(du -m "$BUILD/bundle.tar.xz" | cut -f1) MiB"
cat "$OUT/MANIFEST"
if ((size_mib >= 60)); then
  say "warning: the folder is ${size_mib} MiB, over the 60 MiB target"
fi
