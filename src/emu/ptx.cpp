// Emulated twins of the inline-PTX wrappers (cuda/ptx.cuh): mma.sync.m16n8k16 bf16, ldmatrix .m8n8 .b16
// and cp.async, following the PTX ISA's fragment layouts and group semantics.
#include "dreambooth/emu/ptx_twins.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "allocations.h"
#include "block.h"

namespace db::emu::detail {
namespace {

struct MmaOperands {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
};

float bf16_low(uint32_t r) {
  return std::bit_cast<float>(r << 16);
}
float bf16_high(uint32_t r) {
  return std::bit_cast<float>(r & 0xFFFF0000u);
}

std::string pointer_string(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

void land(const PendingCopy& c) {
  std::memcpy(c.dst, c.src, size_t(c.src_size));
  std::memset(static_cast<char*>(c.dst) + c.src_size, 0, size_t(c.cp_size - c.src_size));
}

}  // namespace

void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                       const std::source_location& site) {
  const MmaOperands ops{a, b, c};
  float out[4];  // d may alias c; every lane's c is read before any d is written anyway
  WarpCall call{WarpOp::Mma, ~0u, 0, false, 0, 32, &ops, out};
  warp_collective(call, site);
  std::memcpy(d, out, sizeof out);
}

// Gathers the warp's fragments into A (16x16), B (16x8), C (16x8) with g = lane / 4, t = lane % 4 as
// the PTX ISA lays them out, computes D = A*B + C with the products summed exactly (double) and one
// rounding to f32, and scatters D like C.
void compute_mma(WarpCall* const calls[32]) {
  float A[16][16], B[16][8], C[16][8];
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto& ops = *static_cast<const MmaOperands*>(calls[lane]->in);
    const unsigned g = lane / 4, t = lane % 4;
    for (unsigned h = 0; h < 2; ++h) {  // h: which of the two bf16 halves (column / row 2t + h)
      auto half = [h](uint32_t r) { return h ? bf16_high(r) : bf16_low(r); };
      A[g][2 * t + h] = half(ops.a[0]);
      A[g + 8][2 * t + h] = half(ops.a[1]);
      A[g][2 * t + 8 + h] = half(ops.a[2]);
      A[g + 8][2 * t + 8 + h] = half(ops.a[3]);
      B[2 * t + h][g] = half(ops.b[0]);
      B[2 * t + 8 + h][g] = half(ops.b[1]);
      C[g][2 * t + h] = ops.c[h];
      C[g + 8][2 * t + h] = ops.c[2 + h];
    }
  }
  float D[16][8];
  for (unsigned i = 0; i < 16; ++i)
    for (unsigned j = 0; j < 8; ++j) {
      double s = C[i][j];
      for (unsigned k = 0; k < 16; ++k) s += double(A[i][k]) * double(B[k][j]);
      D[i][j] = float(s);
    }
  for (unsigned lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<float*>(calls[lane]->out);
    const unsigned g = lane / 4, t = lane % 4;
    out[0] = D[g][2 * t];
    out[1] = D[g][2 * t + 1];
    out[2] = D[g + 8][2 * t];
    out[3] = D[g + 8][2 * t + 1];
  }
}

void ldmatrix_b16(uint32_t* regs, int num, bool trans, const void* row_address,
                  const std::source_location& site) {
  uint32_t out[4];
  WarpCall call{WarpOp::Ldmatrix, ~0u, static_cast<unsigned char>(num), trans, 0, 32, row_address, out};
  warp_collective(call, site);
  std::memcpy(regs, out, sizeof(uint32_t) * size_t(num));
}

// Lanes 8i..8i+7 address rows 0..7 of matrix i (16 bytes each). Without .trans lane L receives row L/4,
// elements 2(L%4) and 2(L%4)+1; with .trans, element L/4 of rows 2(L%4) and 2(L%4)+1.
void compute_ldmatrix(Block& b, Thread& completing, unsigned warp, WarpCall* const calls[32]) {
  const unsigned num = calls[0]->size;
  const bool trans = calls[0]->trans;
  const unsigned char* rows[32];
  for (unsigned lane = 0; lane < 8 * num; ++lane) {
    const void* p = calls[lane]->in;
    const std::string who = "ldmatrix: lane " + std::to_string(lane) + " of warp " + std::to_string(warp) +
                            " gives row address " + pointer_string(p);
    if (reinterpret_cast<uintptr_t>(p) % 16)
      fail(completing, "ldmatrix-address", who + ", not 16-byte aligned");
    if (shared_region(b, p, 16).empty())
      fail(completing, "ldmatrix-address", who + ", not 16 bytes inside one shared-memory variable");
    rows[lane] = static_cast<const unsigned char*>(p);
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<uint32_t*>(calls[lane]->out);
    for (unsigned i = 0; i < num; ++i) {
      uint32_t word;
      if (!trans) {
        std::memcpy(&word, rows[i * 8 + lane / 4] + 4 * (lane % 4), 4);
      } else {
        uint16_t lo, hi;
        std::memcpy(&lo, rows[i * 8 + 2 * (lane % 4)] + 2 * (lane / 4), 2);
        std::memcpy(&hi, rows[i * 8 + 2 * (lane % 4) + 1] + 2 * (lane / 4), 2);
        word = uint32_t(lo) | uint32_t(hi) << 16;
      }
      out[i] = word;
    }
  }
}

void cp_async(void* dst, const void* src, int cp_size, int src_size, bool cache_global,
              const std::source_location& site) {
  Thread& t = current_thread("cp.async");
  Block& b = *t.block;
  const std::string what =
      std::string(cache_global ? "cp.async.cg" : "cp.async.ca") + " at " + site_string(site);
  if (src_size < 0 || src_size > cp_size)
    fail(t, "cp-async",
         what + ": src-size " + std::to_string(src_size) + " outside 0.." + std::to_string(cp_size));
  if (reinterpret_cast<uintptr_t>(dst) % unsigned(cp_size))
    fail(t, "cp-async",
         what + ": destination " + pointer_string(dst) + " not aligned to " + std::to_string(cp_size));
  if (shared_region(b, dst, size_t(cp_size)).empty())
    fail(t, "cp-async",
         what + ": destination " + pointer_string(dst) + " is not " + std::to_string(cp_size) +
             " bytes inside one shared-memory variable");
  if (src_size > 0) {
    if (reinterpret_cast<uintptr_t>(src) % unsigned(cp_size))
      fail(t, "cp-async",
           what + ": source " + pointer_string(src) + " not aligned to " + std::to_string(cp_size));
    const auto a = find_allocation(src);
    const bool inside =
        a && a->kind != MemoryKind::PinnedHost &&
        static_cast<const char*>(src) + src_size <= static_cast<const char*>(a->base) + a->size;
    if (!inside)
      fail(t, "cp-async",
           what + ": source [" + pointer_string(src) + ", +" + std::to_string(src_size) + ") is not inside " +
               (a ? describe(*a) : std::string("any device allocation")));
  }
  const PendingCopy c{dst, src, cp_size, src_size, t.committed_groups};
  if (b.launch->options.cp_async_eager)
    land(c);
  else
    t.copies.push_back(c);
}

void cp_async_commit_group() {
  ++current_thread("cp.async.commit_group").committed_groups;
}

void cp_async_wait_group(int pending_groups_allowed) {
  Thread& t = current_thread("cp.async.wait_group");
  // Groups committed before the newest `pending_groups_allowed` ones complete now, in issue order.
  const uint64_t limit = t.committed_groups > uint64_t(pending_groups_allowed)
                             ? t.committed_groups - uint64_t(pending_groups_allowed)
                             : 0;
  auto keep = t.copies.begin();
  for (auto it = t.copies.begin(); it != t.copies.end(); ++it) {
    if (it->group < limit)
      land(*it);
    else
      *keep++ = *it;
  }
  t.copies.erase(keep, t.copies.end());
}

}  // namespace db::emu::detail
