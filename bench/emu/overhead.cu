// What the CUDA emulator costs (make bench-emu; build/emu/bench_emu_overhead [--workers N]): per
// launch, per CUDA thread, per barrier, per shuffle, and an elementwise kernel per element. Numbers
// for bench/README.md, never asserted (DESIGN.md decision 10).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/emu/options.h"

namespace {

__global__ void empty_kernel() {}

__global__ void barriers_kernel(int rounds) {
  for (int i = 0; i < rounds; ++i) __syncthreads();
}

__global__ void shuffles_kernel(float* out, int rounds) {
  float v = float(threadIdx.x);
  for (int i = 0; i < rounds; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1 + i % 16);
  if (v == -1.f) out[0] = v;  // keeps the loop
}

__global__ void axpy_kernel(const float* x, float* y, float a, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) y[i] = a * x[i] + y[i];
}

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check(cudaError_t e) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  db::emu::Options o = db::emu::options();
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], "--workers") == 0) o.workers = std::atoi(argv[i + 1]);
  db::emu::ScopedOptions scoped(o);
  std::printf("emulator: %s\n\n| what | measure | cost |\n|---|---|---:|\n", db::emu::describe(o).c_str());

  const int launches = 20000;
  double s = seconds([&] {
    for (int i = 0; i < launches; ++i) check(DB_LAUNCH(empty_kernel, dim3(1), dim3(1), 0, nullptr));
  });
  std::printf("| empty launch, 1 thread, no allocations | per launch | %.2f us |\n", 1e6 * s / launches);

  std::vector<void*> live(1000);
  for (void*& p : live) check(cudaMalloc(&p, 4096));
  s = seconds([&] {
    for (int i = 0; i < launches / 10; ++i) check(DB_LAUNCH(empty_kernel, dim3(1), dim3(1), 0, nullptr));
  });
  std::printf("| empty launch, 1 thread, 1000 live allocations (guard check) | per launch | %.2f us |\n",
              1e6 * s / (launches / 10));
  for (void* p : live) check(cudaFree(p));

  const int blocks = 2000, threads = 256;
  s = seconds([&] { check(DB_LAUNCH(empty_kernel, dim3(blocks), dim3(threads), 0, nullptr)); });
  std::printf("| empty kernel, %d x %d threads | per CUDA thread | %.1f ns |\n", blocks, threads,
              1e9 * s / (double(blocks) * threads));

  const int rounds = 100;
  s = seconds([&] { check(DB_LAUNCH(barriers_kernel, dim3(200), dim3(threads), 0, nullptr, rounds)); });
  std::printf("| __syncthreads, 200 x %d threads x %d | per thread and barrier | %.1f ns |\n", threads,
              rounds, 1e9 * s / (200.0 * threads * rounds));

  float* out = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&out), 4));
  s = seconds([&] { check(DB_LAUNCH(shuffles_kernel, dim3(200), dim3(threads), 0, nullptr, out, rounds)); });
  std::printf("| __shfl_xor_sync, 200 x %d threads x %d | per lane and shuffle | %.1f ns |\n", threads,
              rounds, 1e9 * s / (200.0 * threads * rounds));

  const int n = 1 << 22;
  float *x = nullptr, *y = nullptr;
  check(cudaMalloc(reinterpret_cast<void**>(&x), n * sizeof(float)));
  check(cudaMalloc(reinterpret_cast<void**>(&y), n * sizeof(float)));
  check(cudaMemset(x, 0, n * sizeof(float)));
  check(cudaMemset(y, 0, n * sizeof(float)));
  s = seconds(
      [&] { check(DB_LAUNCH(axpy_kernel, dim3((n + 255) / 256), dim3(256), 0, nullptr, x, y, 2.f, n)); });
  std::printf("| y = a x + y, %d elements, one per thread | per element | %.1f ns (%.2f s) |\n", n,
              1e9 * s / n, s);
  check(cudaFree(x));
  check(cudaFree(y));
  check(cudaFree(out));
  return 0;
}
