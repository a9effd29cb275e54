#pragma once
// Warp collectives under emulation, following the PTX rules for the .sync forms:
//   - the calling lane must be in `mask`, and `mask` may name only lanes that exist in the warp;
//   - every lane named in `mask` must reach a collective of the same kind with the same mask (any call
//     site, as on sm_70+); a lane that exits, or waits elsewhere, instead is a violation naming the lanes;
//   - reading a lane outside `mask` (shuffle source) yields poison (all bits set: NaN for floats);
//   - shuffle `width` (a power of two <= 32) splits the warp into segments as shfl.sync's c operand does.
// A collective suspends the calling fiber until all lanes of its mask have arrived; the last arrival
// computes every lane's result.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <source_location>

#include "dreambooth/emu/builtins.h"

namespace db::emu::detail {

enum class WarpOp : unsigned char {
  SyncWarp,
  ShflIdx,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  ReduceAddU,
  ReduceMinU,
  ReduceMaxU,
  ReduceAddI,
  ReduceMinI,
  ReduceMaxI,
  ReduceAnd,
  ReduceOr,
  ReduceXor,
  Mma,       // ptx.cuh: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
  Ldmatrix,  // ptx.cuh: ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16
};

// One lane's part of a collective. `in`/`out` point into the calling fiber's stack, which stays
// alive while it is suspended, so the completing lane reads and writes them directly.
struct WarpCall {
  WarpOp op;
  unsigned mask;
  unsigned char size = 0;  // shuffles: bytes of the value; ldmatrix: number of 8x8 matrices
  bool trans = false;      // ldmatrix .trans
  int b = 0;               // shuffles: source lane / delta / xor mask; votes and reductions: the value
  int width = 32;          // shuffles: segment width
  const void* in = nullptr;
  void* out = nullptr;
};

void warp_collective(WarpCall& call, const std::source_location& site);
unsigned active_mask();

template <class T>
inline T shuffle(WarpOp op, unsigned mask, T var, int b, int width, const std::source_location& site) {
  T out;
  WarpCall call{op, mask, static_cast<unsigned char>(sizeof(T)), false, b, width, &var, &out};
  warp_collective(call, site);
  return out;
}

inline int vote(WarpOp op, unsigned mask, int value, const std::source_location& site) {
  int out = 0;
  WarpCall call{op, mask, 4, false, value, 32, nullptr, &out};
  warp_collective(call, site);
  return out;
}

}  // namespace db::emu::detail

// One overload per type CUDA provides (so integer promotions pick the same overload nvcc would).
#define DB_EMU_SHUFFLES(T)                                                                                   \
  inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,                             \
                       std::source_location site = std::source_location::current()) {                        \
    return ::db::emu::detail::shuffle(::db::emu::detail::WarpOp::ShflIdx, mask, var, src_lane, width, site); \
  }                                                                                                          \
  inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,                        \
                          std::source_location site = std::source_location::current()) {                     \
    return ::db::emu::detail::shuffle(::db::emu::detail::WarpOp::ShflUp, mask, var, int(delta), width,       \
                                      site);                                                                 \
  }                                                                                                          \
  inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,                      \
                            std::source_location site = std::source_location::current()) {                   \
    return ::db::emu::detail::shuffle(::db::emu::detail::WarpOp::ShflDown, mask, var, int(delta), width,     \
                                      site);                                                                 \
  }                                                                                                          \
  inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,                        \
                           std::source_location site = std::source_location::current()) {                    \
    return ::db::emu::detail::shuffle(::db::emu::detail::WarpOp::ShflXor, mask, var, lane_mask, width,       \
                                      site);                                                                 \
  }
DB_EMU_SHUFFLES(int)
DB_EMU_SHUFFLES(unsigned)
DB_EMU_SHUFFLES(long)
DB_EMU_SHUFFLES(unsigned long)
DB_EMU_SHUFFLES(long long)
DB_EMU_SHUFFLES(unsigned long long)
DB_EMU_SHUFFLES(float)
DB_EMU_SHUFFLES(double)
DB_EMU_SHUFFLES(__half)
DB_EMU_SHUFFLES(__half2)
DB_EMU_SHUFFLES(__nv_bfloat16)
DB_EMU_SHUFFLES(__nv_bfloat162)
#undef DB_EMU_SHUFFLES

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location site = std::source_location::current()) {
  return unsigned(::db::emu::detail::vote(::db::emu::detail::WarpOp::Ballot, mask, predicate, site));
}
inline int __any_sync(unsigned mask, int predicate,
                      std::source_location site = std::source_location::current()) {
  return ::db::emu::detail::vote(::db::emu::detail::WarpOp::Any, mask, predicate, site);
}
inline int __all_sync(unsigned mask, int predicate,
                      std::source_location site = std::source_location::current()) {
  return ::db::emu::detail::vote(::db::emu::detail::WarpOp::All, mask, predicate, site);
}
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       std::source_location site = std::source_location::current()) {
  ::db::emu::detail::vote(::db::emu::detail::WarpOp::SyncWarp, mask, 0, site);
}
// The lanes of the calling warp that have not exited (the emulator has no sub-warp divergence).
inline unsigned __activemask() {
  return ::db::emu::detail::active_mask();
}

#define DB_EMU_REDUCE(NAME, T, OP)                                                                     \
  inline T NAME(unsigned mask, T value, std::source_location site = std::source_location::current()) { \
    return T(::db::emu::detail::vote(::db::emu::detail::WarpOp::OP, mask, int(value), site));          \
  }
DB_EMU_REDUCE(__reduce_add_sync, unsigned, ReduceAddU)
DB_EMU_REDUCE(__reduce_min_sync, unsigned, ReduceMinU)
DB_EMU_REDUCE(__reduce_max_sync, unsigned, ReduceMaxU)
DB_EMU_REDUCE(__reduce_add_sync, int, ReduceAddI)
DB_EMU_REDUCE(__reduce_min_sync, int, ReduceMinI)
DB_EMU_REDUCE(__reduce_max_sync, int, ReduceMaxI)
DB_EMU_REDUCE(__reduce_and_sync, unsigned, ReduceAnd)
DB_EMU_REDUCE(__reduce_or_sync, unsigned, ReduceOr)
DB_EMU_REDUCE(__reduce_xor_sync, unsigned, ReduceXor)
#undef DB_EMU_REDUCE
