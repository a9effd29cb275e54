#pragma once
// The device the emulator models: sm_90 (H100/H200-class) limits, and its poison/guard byte values.
#include <cstddef>

namespace db::emu::detail {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kSharedStaticLimit = 48 << 10;          // static shared memory per block
constexpr size_t kSharedDefaultDynamicLimit = 48 << 10;  // dynamic, without cudaFuncSetAttribute
constexpr size_t kSharedOptinLimit = 227 << 10;          // static + dynamic per block (232448 bytes)
constexpr size_t kSharedPerMultiprocessor = 228 << 10;
constexpr int kMultiprocessors = 132;        // H100 SXM: launchers that size grids by SM count behave alike
constexpr unsigned char kPoisonByte = 0xFF;  // fresh memory: NaN as f32 (0xFFFFFFFF) and bf16 (0xFFFF)
constexpr unsigned char kGuardByte = 0xDB;   // guard zones around allocations and shared variables

}  // namespace db::emu::detail
