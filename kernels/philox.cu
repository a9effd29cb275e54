// Philox4x32-10 stream on the device (Salmon et al., SC'11), bit-identical to core/philox.h:
// element e of stream (seed, purpose, step, sample) is word e % 4 of the block at counter
// (e / 4, sample, step, purpose) with key (seed_lo, seed_hi).
//
// philox_normals_kernel: one thread per Philox block (4 elements = 2 Box-Muller pairs), 256 threads.
// The Box-Muller of PhiloxStream::normal in double, rounded once to float. The uniforms are exact
// ((u + 0.5) * 2^-32) and r * cos(theta) is a single rounding, so the only possible difference from
// the CPU is the double libm: under the emulator log/sqrt/sin/cos ARE the host's glibc and the result
// is bit-identical (tested). On a GPU sqrt is IEEE (correctly rounded) but CUDA's log is documented at
// <= 1 ulp and sin/cos at <= 2 ulp, where glibc is (almost always) correctly rounded, so a double may
// differ from the CPU's in its last bit. That changes the float only when the double lies within
// a few ulp(double) of a float rounding boundary (ulp(double) / ulp(float) = 2^-29): a few draws per
// 10^9 may differ by 1 ulp(float). Measured only under the emulator so far, not on a GPU.
// ptxas -v, sm_90a: philox_u32_kernel 16 registers; philox_normals_kernel 36 registers and a 40-byte
// stack frame (no spills): the local array of CUDA's double sin/cos slow-path argument reduction,
// never taken here since theta is in (0, 2 pi).
#include "dreambooth/backend/cuda/philox_kernel.h"
#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/kernels/train_step.h"

namespace db {
namespace {

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = __umulhi(M0, c.x), lo0 = M0 * c.x;
    const uint32_t hi1 = __umulhi(M1, c.z), lo1 = M1 * c.z;
    c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    k.x += W0;
    k.y += W1;
  }
  return c;
}

// One thread per block of 4 elements. out: [n]
__global__ void philox_u32_kernel(uint32_t* out, uint64_t n, uint2 key, uint32_t sample, uint32_t step,
                                  uint32_t purpose) {
  const uint64_t b = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b * 4 >= n) return;
  const uint4 r = philox4x32_10(make_uint4(uint32_t(b), sample, step, purpose), key);
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
  for (int i = 0; i < 4 && b * 4 + i < n; ++i) out[b * 4 + i] = w[i];
}

// out [n] f32: element e = normal e of the stream (core/philox.cpp PhiloxStream::normal).
__global__ void __launch_bounds__(256)
    philox_normals_kernel(float* __restrict__ out, uint64_t n, uint2 key, uint32_t sample, uint32_t step,
                          uint32_t purpose) {
  const uint64_t b = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b * 4 >= n) return;
  const uint4 r = philox4x32_10(make_uint4(uint32_t(b), sample, step, purpose), key);
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int pair = 0; pair < 2; ++pair) {
    const uint64_t e = b * 4 + 2 * pair;
    if (e >= n) break;
    const double u1 = (double(w[2 * pair]) + 0.5) * (1.0 / 4294967296.0);
    const double u2 = (double(w[2 * pair + 1]) + 0.5) * (1.0 / 4294967296.0);
    const double rad = sqrt(-2.0 * log(u1));
    const double theta = 2.0 * M_PI * u2;
    out[e] = float(rad * cos(theta));
    if (e + 1 < n) out[e + 1] = float(rad * sin(theta));
  }
}

}  // namespace

namespace kernels {

cudaError_t philox_normals(uint64_t seed, uint32_t purpose, uint32_t step, uint32_t sample, float* out,
                           uint64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const uint64_t blocks = (n + 3) / 4, threads = 256;
  if ((blocks + threads - 1) / threads > 0x7fffffffu) return cudaErrorInvalidValue;
  return DB_LAUNCH(philox_normals_kernel, dim3(unsigned((blocks + threads - 1) / threads)),
                   dim3(unsigned(threads)), 0, stream, out, n,
                   make_uint2(uint32_t(seed), uint32_t(seed >> 32)), sample, step, purpose);
}

}  // namespace kernels

bool cuda_philox_u32(uint64_t seed, uint32_t purpose, uint32_t step, uint32_t sample, uint32_t* out,
                     uint64_t n, std::string* error) {
  uint32_t* d = nullptr;
  cudaError_t err = cudaMalloc(&d, n * sizeof(uint32_t));
  if (err == cudaSuccess) {
    const uint64_t blocks = (n + 3) / 4;
    const unsigned threads = 256;
    err = DB_LAUNCH(philox_u32_kernel, dim3(unsigned((blocks + threads - 1) / threads)), dim3(threads), 0,
                    nullptr, d, n, make_uint2(uint32_t(seed), uint32_t(seed >> 32)), sample, step, purpose);
    if (err == cudaSuccess) err = cudaMemcpy(out, d, n * sizeof(uint32_t), cudaMemcpyDeviceToHost);
  }
  if (d) cudaFree(d);
  if (err != cudaSuccess && error) *error = cudaGetErrorString(err);
  return err == cudaSuccess;
}

}  // namespace db
