#pragma once
// Device math and bit intrinsics with host definitions. The fast approximations (__expf, __logf,
// __fdividef, ...) are computed at full precision here, and g++ does not contract a*b+c into an FMA as
// nvcc does by default: kernel tests compare with tolerances that cover both (bit-exact tests use
// integer arithmetic only). Float-to-int conversions saturate and map NaN to 0, as PTX cvt does.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

// min/max: CUDA provides global overloads for the arithmetic types (no std:: needed in kernels).
#define DB_EMU_MINMAX(T)   \
  inline T min(T a, T b) { \
    return b < a ? b : a;  \
  }                        \
  inline T max(T a, T b) { \
    return a < b ? b : a;  \
  }
DB_EMU_MINMAX(int)
DB_EMU_MINMAX(unsigned)
DB_EMU_MINMAX(long)
DB_EMU_MINMAX(unsigned long)
DB_EMU_MINMAX(long long)
DB_EMU_MINMAX(unsigned long long)
#undef DB_EMU_MINMAX
inline float min(float a, float b) {
  return std::fmin(a, b);
}
inline float max(float a, float b) {
  return std::fmax(a, b);
}
inline double min(double a, double b) {
  return std::fmin(a, b);
}
inline double max(double a, double b) {
  return std::fmax(a, b);
}
// Mixed signed/unsigned: CUDA converts to unsigned, like the usual arithmetic conversions.
inline unsigned min(int a, unsigned b) {
  return min(unsigned(a), b);
}
inline unsigned min(unsigned a, int b) {
  return min(a, unsigned(b));
}
inline unsigned max(int a, unsigned b) {
  return max(unsigned(a), b);
}
inline unsigned max(unsigned a, int b) {
  return max(a, unsigned(b));
}

inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline double rsqrt(double x) {
  return 1.0 / std::sqrt(x);
}
inline float rcbrtf(float x) {
  return 1.0f / std::cbrt(x);
}
inline float normcdff(float x) {
  return 0.5f * std::erfc(-x * 0.70710678118654752f);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __exp10f(float x) {
  return std::pow(10.0f, x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __log2f(float x) {
  return std::log2(x);
}
inline float __log10f(float x) {
  return std::log10(x);
}
inline float __powf(float x, float y) {
  return std::pow(x, y);
}
inline float __sinf(float x) {
  return std::sin(x);
}
inline float __cosf(float x) {
  return std::cos(x);
}
inline float __tanf(float x) {
  return std::tan(x);
}
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline float __tanhf(float x) {
  return std::tanh(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __frcp_rn(float x) {
  return 1.0f / x;
}
inline float __fsqrt_rn(float x) {
  return std::sqrt(x);
}
inline float __frsqrt_rn(float x) {
  return 1.0f / std::sqrt(x);
}
inline float __fmaf_rn(float a, float b, float c) {
  return std::fma(a, b, c);
}
inline float __fadd_rn(float a, float b) {
  return a + b;
}
inline float __fsub_rn(float a, float b) {
  return a - b;
}
inline float __fmul_rn(float a, float b) {
  return a * b;
}
inline float __fdiv_rn(float a, float b) {
  return a / b;
}
inline float __saturatef(float x) {
  return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f;
}  // NaN -> 0

inline unsigned __float_as_uint(float x) {
  return std::bit_cast<unsigned>(x);
}
inline float __uint_as_float(unsigned x) {
  return std::bit_cast<float>(x);
}
inline int __float_as_int(float x) {
  return std::bit_cast<int>(x);
}
inline float __int_as_float(int x) {
  return std::bit_cast<float>(x);
}
inline long long __double_as_longlong(double x) {
  return std::bit_cast<long long>(x);
}
inline double __longlong_as_double(long long x) {
  return std::bit_cast<double>(x);
}

namespace db::emu::detail {
// PTX cvt.{rni,rzi}.{s32,u32}.f32: round, then clamp to the destination range; NaN gives 0.
template <class I>
inline I float_to_int(double rounded) {
  if (std::isnan(rounded)) return 0;
  if (rounded <= double(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (rounded >= double(std::numeric_limits<I>::max())) return std::numeric_limits<I>::max();
  return I(rounded);
}
}  // namespace db::emu::detail
inline int __float2int_rn(float x) {
  return db::emu::detail::float_to_int<int>(std::nearbyint(double(x)));
}
inline int __float2int_rz(float x) {
  return db::emu::detail::float_to_int<int>(std::trunc(double(x)));
}
inline int __float2int_rd(float x) {
  return db::emu::detail::float_to_int<int>(std::floor(double(x)));
}
inline int __float2int_ru(float x) {
  return db::emu::detail::float_to_int<int>(std::ceil(double(x)));
}
inline unsigned __float2uint_rn(float x) {
  return db::emu::detail::float_to_int<unsigned>(std::nearbyint(double(x)));
}
inline unsigned __float2uint_rz(float x) {
  return db::emu::detail::float_to_int<unsigned>(std::trunc(double(x)));
}
inline float __int2float_rn(int x) {
  return float(x);
}
inline float __uint2float_rn(unsigned x) {
  return float(x);
}

inline unsigned __umulhi(unsigned a, unsigned b) {
  return unsigned((uint64_t(a) * b) >> 32);
}
inline int __mulhi(int a, int b) {
  return int((int64_t(a) * b) >> 32);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)((unsigned __int128)a * b >> 64);
}
inline int __mul24(int a, int b) {
  return int(int32_t(uint32_t(a) << 8) >> 8) * int(int32_t(uint32_t(b) << 8) >> 8);
}
inline int __popc(unsigned x) {
  return std::popcount(x);
}
inline int __popcll(unsigned long long x) {
  return std::popcount(x);
}
inline int __clz(int x) {
  return std::countl_zero(unsigned(x));
}
inline int __clzll(long long x) {
  return std::countl_zero((unsigned long long)x);
}
inline int __ffs(int x) {
  return x == 0 ? 0 : std::countr_zero(unsigned(x)) + 1;
}
inline int __ffsll(long long x) {
  return x == 0 ? 0 : std::countr_zero((unsigned long long)x) + 1;
}
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
// PTX prmt (default mode): byte i of the result is byte (s >> 4i) & 7 of the 8-byte value {y, x}.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (uint64_t(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  return unsigned(((uint64_t(hi) << 32 | lo) << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  return unsigned((uint64_t(hi) << 32 | lo) >> (shift & 31));
}

// Read-only / cache-hinted loads and stores are plain accesses on the host.
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
template <class T>
inline T __ldca(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class T>
inline T __ldlu(const T* p) {
  return *p;
}
template <class T>
inline void __stcg(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stwt(T* p, T v) {
  *p = v;
}
