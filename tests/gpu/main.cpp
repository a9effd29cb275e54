// main() of the GPU test binaries (build/gpu_kernel_tests, build/gpu_cuda_tests). With no usable CUDA
// device every test would fail one by one, hundreds of lines, or crash on a null device pointer; this checks
// cudaGetDeviceCount first and exits 2 with one line instead. --gtest_list_tests still works without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdio>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!GTEST_FLAG_GET(list_tests)) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0) {
      std::fprintf(stderr, "%s: no CUDA device (%s): these tests need a GPU\n", argv[0],
                   err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
      return 2;
    }
  }
  return RUN_ALL_TESTS();
}
