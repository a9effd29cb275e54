// CPU backend memory ops: fill, copy, cast, upload, download (host memory: plain synchronous copies).
#include <cstring>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"

namespace db {

namespace {

void check_cpu(const Tensor& t, const char* op) {
  DB_CHECK(t.defined() && t.device() == Device::CPU, op, ": expected a CPU tensor, got ",
           t.defined() ? t.desc() : std::string("an undefined tensor"));
}

bool is_float(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F64;
}

}  // namespace

void CpuOps::fill(Tensor& t, float value) {
  check_cpu(t, "fill");
  const int64_t n = t.numel();
  switch (t.dtype()) {
    case DType::F32: {
      float* p = t.f32();
      for (int64_t i = 0; i < n; ++i) p[i] = value;
      break;
    }
    case DType::BF16:
    case DType::F16: {
      const uint16_t h = t.dtype() == DType::BF16 ? f32_to_bf16(value) : f32_to_f16(value);
      uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = h;
      break;
    }
    case DType::F64: {
      double* p = t.data<double>();
      for (int64_t i = 0; i < n; ++i) p[i] = value;
      break;
    }
    default:
      throw Error("fill: ", t.desc(), " is not a float tensor");
  }
}

void CpuOps::copy(const Tensor& src, Tensor& dst) {
  check_cpu(src, "copy");
  check_cpu(dst, "copy");
  DB_CHECK(src.shape() == dst.shape() && src.dtype() == dst.dtype(), "copy: ", src.desc(), " into ",
           dst.desc());
  std::memmove(dst.raw(), src.raw(), src.nbytes());
}

void CpuOps::cast(const Tensor& src, Tensor& dst) {
  check_cpu(src, "cast");
  check_cpu(dst, "cast");
  DB_CHECK(src.shape() == dst.shape() && is_float(src.dtype()) && is_float(dst.dtype()), "cast: ", src.desc(),
           " into ", dst.desc());
  if (src.dtype() == dst.dtype()) return copy(src, dst);
  const Tensor converted = src.to(dst.dtype());
  std::memcpy(dst.raw(), converted.raw(), dst.nbytes());
}

void CpuOps::upload(const void* host, Tensor& dst) {
  check_cpu(dst, "upload");
  if (dst.raw() != host) std::memmove(dst.raw(), host, dst.nbytes());
}

void CpuOps::download(const Tensor& src, void* host) {
  check_cpu(src, "download");
  if (src.raw() != host) std::memmove(host, src.raw(), src.nbytes());
}

}  // namespace db
