#pragma once
// Every inline-PTX instruction the project uses, each behind a wrapper: real `asm` under nvcc (sm_80+),
// an emulated twin under DB_EMU that follows the PTX ISA. Kernels call only these wrappers.
//
// mma_m16n8k16_bf16(d, a, b, c)   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: D = A*B + C,
//   A 16x16 (row), B 16x8 (col), C/D 16x8 f32. With g = lane / 4, t = lane % 4, each register holds
//   two bf16 (low half = lower column/row index):
//     a[0] = A[g][2t..2t+1]    a[1] = A[g+8][2t..2t+1]   a[2] = A[g][2t+8..]   a[3] = A[g+8][2t+8..]
//     b[0] = B[2t..2t+1][g]    b[1] = B[2t+8..2t+9][g]
//     c[0..1] = C[g][2t..2t+1] c[2..3] = C[g+8][2t..2t+1]       (d likewise)
// ldmatrix_x{1,2,4}[_trans](r, p)   ldmatrix.sync.aligned.m8n8.x{1,2,4}{.trans}.shared.b16: lanes
//   8i..8i+7 give the 16-byte-aligned shared addresses of rows 0..7 of matrix i; r[i] of lane L holds
//   row L/4, columns 2(L%4), 2(L%4)+1 of matrix i (with .trans: rows 2(L%4), 2(L%4)+1 of column L/4).
//   So ldmatrix_x4 with lane L pointing at A's row (L % 16), column 8 * (L / 16) yields a[0..3] above.
// cp_async_ca<N>(dst, src) / cp_async_cg(dst, src)   cp.async.{ca,cg}.shared.global, N = 4, 8, 16
//   (.cg: 16 only); the _zfill forms copy src_bytes <= N and zero the rest (masked tails).
// cp_async_commit_group() / cp_async_wait_group<N>() / cp_async_wait_all()
//
// mma and ldmatrix are warp-collective: all 32 lanes, converged, at the same call site.
#include <cstdint>

#include "dreambooth/cuda/compat.cuh"

#if defined(__CUDACC__)

namespace db::ptx {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                                                  const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}

__device__ __forceinline__ void ldmatrix_x1(uint32_t r[1], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t r[1], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

template <int Bytes>
__device__ __forceinline__ void cp_async_ca(void* dst, const void* src) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(shared_address(dst)),
               "l"(__cvta_generic_to_global(src)), "n"(Bytes)
               : "memory");
}
template <int Bytes>
__device__ __forceinline__ void cp_async_ca_zfill(void* dst, const void* src, int src_bytes) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(dst)),
               "l"(__cvta_generic_to_global(src)), "n"(Bytes), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_cg(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_address(dst)),
               "l"(__cvta_generic_to_global(src))
               : "memory");
}
__device__ __forceinline__ void cp_async_cg_zfill(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)),
               "l"(__cvta_generic_to_global(src)), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

}  // namespace db::ptx

#else  // DB_EMU

#include <source_location>

#include "dreambooth/emu/ptx_twins.h"

namespace db::ptx {

using Site = std::source_location;

inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                              Site site = Site::current()) {
  emu::detail::mma_m16n8k16_bf16(d, a, b, c, site);
}
inline void ldmatrix_x1(uint32_t r[1], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 1, false, p, site);
}
inline void ldmatrix_x2(uint32_t r[2], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 2, false, p, site);
}
inline void ldmatrix_x4(uint32_t r[4], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 4, false, p, site);
}
inline void ldmatrix_x1_trans(uint32_t r[1], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 1, true, p, site);
}
inline void ldmatrix_x2_trans(uint32_t r[2], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 2, true, p, site);
}
inline void ldmatrix_x4_trans(uint32_t r[4], const void* p, Site site = Site::current()) {
  emu::detail::ldmatrix_b16(r, 4, true, p, site);
}

template <int Bytes>
inline void cp_async_ca(void* dst, const void* src, Site site = Site::current()) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  emu::detail::cp_async(dst, src, Bytes, Bytes, false, site);
}
template <int Bytes>
inline void cp_async_ca_zfill(void* dst, const void* src, int src_bytes, Site site = Site::current()) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  emu::detail::cp_async(dst, src, Bytes, src_bytes, false, site);
}
inline void cp_async_cg(void* dst, const void* src, Site site = Site::current()) {
  emu::detail::cp_async(dst, src, 16, 16, true, site);
}
inline void cp_async_cg_zfill(void* dst, const void* src, int src_bytes, Site site = Site::current()) {
  emu::detail::cp_async(dst, src, 16, src_bytes, true, site);
}
inline void cp_async_commit_group() {
  emu::detail::cp_async_commit_group();
}
template <int N>
inline void cp_async_wait_group() {
  emu::detail::cp_async_wait_group(N);
}
inline void cp_async_wait_all() {
  emu::detail::cp_async_commit_group();
  emu::detail::cp_async_wait_group(0);
}

}  // namespace db::ptx

#endif
