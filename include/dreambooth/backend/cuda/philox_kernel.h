#pragma once
// Philox4x32-10 on the device: the same stream as db::PhiloxStream::u32 (core/philox.h), so GPU noise
// can be drawn exactly as the CPU draws it. Built only with CUDA (kernels/philox.cu).
#include <cstdint>
#include <string>

namespace db {

// Fills host `out[0..n)` with u32 elements of the stream (seed, purpose, step, sample), computed on
// device 0. Returns false and sets `error` when the CUDA runtime fails.
bool cuda_philox_u32(uint64_t seed, uint32_t purpose, uint32_t step, uint32_t sample, uint32_t* out,
                     uint64_t n, std::string* error);

}  // namespace db
