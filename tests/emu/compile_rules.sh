#!/usr/bin/env bash
# Compile-time rules of the emulated build: code that must not compile under g++ -DDB_EMU=1 (so no
# kernel slips past the emulator's checks), each with a positive control that does compile.
# Usage: tests/emu/compile_rules.sh "CXX AND FLAGS"   (the Makefile passes the emulated build's)
set -uo pipefail
cxx=$1
failed=0
compile() { printf '%s\n' "$1" | $cxx -fsyntax-only -x c++ - 2>&1; }
expect_ok() {  # NAME SOURCE
  local out
  if ! out=$(compile "$2"); then
    echo "compile rules: control '$1' does not compile:"; echo "$out" | head -5; failed=1
  fi
}
expect_error() {  # NAME MESSAGE-REGEX SOURCE
  local out
  if out=$(compile "$3"); then
    echo "compile rules: '$1' compiles but must not"; failed=1
  elif ! grep -qE "$2" <<<"$out"; then
    echo "compile rules: '$1' fails without the expected message /$2/:"; echo "$out" | head -5; failed=1
  fi
}
pre='#include "dreambooth/cuda/compat.cuh"'

expect_ok "DB_SHARED and DB_LAUNCH" "$pre
__global__ void k(float* y) { DB_SHARED(float[32], t); t[threadIdx.x] = 1.f; y[0] = t[0]; }
cudaError_t f(float* y) { return DB_LAUNCH(k, dim3(1), dim3(32), 0, nullptr, y); }"
expect_error "plain __shared__" "use DB_SHARED" "$pre
__global__ void k(float* y) { __shared__ float t[32]; t[threadIdx.x] = 1.f; y[0] = t[0]; }"
expect_error "extern __shared__" "use DB_SHARED" "$pre
__global__ void k(float* y) { extern __shared__ float t[]; y[0] = t[0]; }"
expect_error "__constant__" "not emulated" "$pre
__constant__ float c[4];"
expect_error "<<<>>> instead of DB_LAUNCH" "error" "$pre
__global__ void k() {}
void f() { k<<<1, 1>>>(); }"
expect_error "DB_LAUNCH with a missing argument" "argument count differs" "$pre
__global__ void k(float*, int) {}
cudaError_t f(float* y) { return DB_LAUNCH(k, dim3(1), dim3(1), 0, nullptr, y); }"
expect_error "a compat.cuh kernel file built without DB_EMU or nvcc" "compile with nvcc, or with g\+\+" "
#undef DB_EMU
$pre"

[ $failed -eq 0 ] && echo "compile rules: 6 rejected as they must be, control compiles"
exit $failed
