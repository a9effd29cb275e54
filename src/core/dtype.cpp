#include "dreambooth/core/dtype.h"

#include <cmath>

#include "dreambooth/core/error.h"

namespace db {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::BF16:
      return 2;
    case DType::F16:
      return 2;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
    case DType::U8:
      return 1;
    case DType::F64:
      return 8;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "f32";
    case DType::BF16:
      return "bf16";
    case DType::F16:
      return "f16";
    case DType::I32:
      return "i32";
    case DType::I64:
      return "i64";
    case DType::U8:
      return "u8";
    case DType::F64:
      return "f64";
  }
  return "?";
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F16:
      return "F16";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
    case DType::F64:
      return "F64";
  }
  return "?";
}

bool dtype_from_safetensors(std::string_view s, DType* out) {
  static const struct {
    const char* name;
    DType t;
  } table[] = {{"F32", DType::F32}, {"BF16", DType::BF16}, {"F16", DType::F16},
               {"I32", DType::I32}, {"I64", DType::I64},   {"U8", DType::U8}};
  for (const auto& e : table)
    if (s == e.name) {
      *out = e.t;
      return true;
    }
  return false;
}

DType dtype_from_name(const std::string& s) {
  if (s == "fp32" || s == "f32" || s == "float32") return DType::F32;
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "fp16" || s == "f16" || s == "float16") return DType::F16;
  throw Error("unknown dtype '", s, "' (expected fp32, fp16 or bf16)");
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: value = man * 2^-24
      float f = std::ldexp(float(man), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00;   // NaN
  if (a >= 0x477ff000u) return sign | 0x7c00;  // overflow (rounds to >= 65520) -> inf
  if (a < 0x38800000u) {                       // below f16 normal range: subnormal or 0
    float af;
    std::memcpy(&af, &a, 4);
    float scaled = af * 16777216.0f;                 // value / 2^-24
    return sign | uint16_t(std::nearbyint(scaled));  // round half to even (default mode)
  }
  uint32_t mant_odd = (a >> 13) & 1u;
  a += 0xfffu + mant_odd;  // round to nearest even on bit 13
  return sign | uint16_t(((a >> 13) - (112u << 10)) & 0x7fff);
}

}  // namespace db
