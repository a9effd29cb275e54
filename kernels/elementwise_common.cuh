#pragma once
// Shared by kernels/elementwise.cu, layout.cu and embedding.cu: float conversion of the element types,
// packed (up to 128-bit) loads and stores, alignment checks and the grid size of grid-stride loops.
#include <cstdint>

#include "dreambooth/core/dtype.h"
#include "dreambooth/cuda/compat.cuh"

namespace db::kernels::detail {

constexpr int kThreads = 256;
// Grid-stride loops: enough blocks to fill an H100 several times over, few enough for the emulator.
constexpr int64_t kMaxBlocks = 4096;

inline dim3 grid_for(int64_t units) {
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  return dim3(unsigned(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks)));
}

__device__ __forceinline__ int64_t global_thread() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return int64_t(gridDim.x) * blockDim.x;
}

template <class T>
__device__ __forceinline__ float to_f(T v);
template <>
__device__ __forceinline__ float to_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <>
__device__ __forceinline__ float to_f<__half>(__half v) {
  return __half2float(v);
}

template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}

// V elements of T as one aligned access (V * sizeof(T) <= 16 bytes: one 128-bit load for float4 / 8 bf16).
template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <int V, class T>
__device__ __forceinline__ void load_f(const T* p, float (&f)[V]) {
  const Pack<T, V> k = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) f[i] = to_f(k.v[i]);
}

template <int V, class T>
__device__ __forceinline__ void store_f(T* p, const float (&f)[V]) {
  Pack<T, V> k;
#pragma unroll
  for (int i = 0; i < V; ++i) k.v[i] = from_f<T>(f[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = k;
}

inline bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Runs f.template operator()<T>() with the CUDA element type of an F32 / BF16 dtype; false otherwise.
template <class F>
bool with_float_type(DType t, F&& f) {
  switch (t) {
    case DType::F32:
      f.template operator()<float>();
      return true;
    case DType::BF16:
      f.template operator()<__nv_bfloat16>();
      return true;
    default:
      return false;
  }
}

}  // namespace db::kernels::detail
