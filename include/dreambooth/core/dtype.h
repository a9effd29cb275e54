#pragma once
// Element types and the half-precision conversions the CPU needs (round-to-nearest-even, as torch).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace db {

// F64 holds a few reduction results (gradient sums of squares) in backend memory; model files never
// carry it (the safetensors reader refuses F64 tensors).
enum class DType : uint8_t { F32, BF16, F16, I32, I64, U8, F64 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);                              // "f32", "bf16", ...
const char* dtype_safetensors_name(DType t);                  // "F32", "BF16", "F16", "I32", "I64", "U8"
bool dtype_from_safetensors(std::string_view s, DType* out);  // false when unknown
DType dtype_from_name(const std::string& s);  // "fp32"/"f32"/"float32", "bf16", "fp16"/"f16"; throws

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);                                         // round to nearest even
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace db
