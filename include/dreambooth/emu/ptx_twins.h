#pragma once
// The emulated twins of the inline-PTX wrappers in cuda/ptx.cuh (that header is the documented API;
// kernels never call these directly). Each follows the PTX ISA: fragment layouts of
// mma.m16n8k16 .bf16 and ldmatrix .m8n8 .b16 (warp-collective, all 32 lanes, same call site), and
// cp.async's commit/wait groups with copies landing lazily at the wait or eagerly at issue.
#include <cstdint>
#include <source_location>

namespace db::emu::detail {

// D = A * B + C for one warp; a/b/c/d are this lane's fragments.
void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                       const std::source_location& site);
// num = 1, 2 or 4 matrices; row_address is this lane's row (lanes 0..8*num-1 are used).
void ldmatrix_b16(uint32_t* regs, int num, bool trans, const void* row_address,
                  const std::source_location& site);
// cp_size bytes to shared `dst`: the first src_size from global `src`, the rest zero-filled.
void cp_async(void* dst, const void* src, int cp_size, int src_size, bool cache_global,
              const std::source_location& site);
void cp_async_commit_group();
void cp_async_wait_group(int pending_groups_allowed);

}  // namespace db::emu::detail
