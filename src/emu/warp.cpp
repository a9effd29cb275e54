// Warp collectives: rendezvous of the lanes named in a mask, consistency checks between lanes
// (same kind, same mask), and the PTX semantics of each operation once all lanes have arrived.
#include <bit>
#include <cstring>

#include "block.h"

namespace db::emu::detail {
namespace {

bool is_shuffle(WarpOp op) {
  return op == WarpOp::ShflIdx || op == WarpOp::ShflUp || op == WarpOp::ShflDown || op == WarpOp::ShflXor;
}
bool is_aligned(WarpOp op) {
  return op == WarpOp::Mma || op == WarpOp::Ldmatrix;
}

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() && std::strcmp(a.file_name(), b.file_name()) == 0;
}

std::string describe(const WarpCall& c, const std::source_location& site) {
  return std::string(op_name(c.op)) + " (mask " + hex_mask(c.mask) + ", " + site_string(site) + ")";
}

uint32_t existing_lanes(const Block& b, unsigned warp) {
  const unsigned n = std::min(32u, b.n_threads - warp * 32);
  return n == 32 ? ~0u : (1u << n) - 1;
}

// shfl.sync.{idx,up,down,bfly}.b32 with c = ((32 - width) << 8) | clamp, as CUDA's __shfl*_sync pass it:
// the source lane, or the lane itself when the source falls outside its segment.
unsigned shuffle_source(WarpOp op, unsigned lane, int b, int width) {
  const int segmask = (32 - width) & 31;
  const int clamp = op == WarpOp::ShflUp ? 0 : 31;
  const int bval = b & 31;
  const int ilane = int(lane);
  const int max_lane = (ilane & segmask) | (clamp & ~segmask);
  const int min_lane = ilane & segmask;
  int j = ilane;
  bool in_range = false;
  switch (op) {
    case WarpOp::ShflUp:
      j = ilane - bval;
      in_range = j >= max_lane;
      break;
    case WarpOp::ShflDown:
      j = ilane + bval;
      in_range = j <= max_lane;
      break;
    case WarpOp::ShflXor:
      j = ilane ^ bval;
      in_range = j <= max_lane;
      break;
    default:
      j = min_lane | (bval & ~segmask);
      in_range = j <= max_lane;
      break;
  }
  return in_range ? unsigned(j) : lane;
}

void compute_shuffle(WarpCall* const calls[32], uint32_t mask) {
  for (uint32_t rest = mask; rest; rest &= rest - 1) {
    const unsigned lane = unsigned(std::countr_zero(rest));
    WarpCall& c = *calls[lane];
    const unsigned src = shuffle_source(c.op, lane, c.b, c.width);
    if (mask >> src & 1)
      std::memcpy(c.out, calls[src]->in, c.size);
    else
      std::memset(c.out, kPoisonByte, c.size);  // reading a lane outside the mask: undefined -> poison
  }
}

void compute_vote(WarpCall* const calls[32], uint32_t mask, WarpOp op) {
  uint32_t ballot = 0, band = ~0u, bor = 0, bxor = 0, sum = 0;
  uint32_t umin = ~0u, umax = 0;
  int32_t imin = INT32_MAX, imax = INT32_MIN;
  for (uint32_t rest = mask; rest; rest &= rest - 1) {
    const unsigned lane = unsigned(std::countr_zero(rest));
    const int v = calls[lane]->b;
    const uint32_t u = uint32_t(v);
    if (v) ballot |= 1u << lane;
    band &= u;
    bor |= u;
    bxor ^= u;
    sum += u;  // modulo 2^32, as the hardware adds
    umin = std::min(umin, u);
    umax = std::max(umax, u);
    imin = std::min(imin, v);
    imax = std::max(imax, v);
  }
  int result = 0;
  switch (op) {
    case WarpOp::SyncWarp:
      return;
    case WarpOp::Ballot:
      result = int(ballot);
      break;
    case WarpOp::Any:
      result = ballot != 0;
      break;
    case WarpOp::All:
      result = ballot == mask;
      break;
    case WarpOp::ReduceAddU:
    case WarpOp::ReduceAddI:
      result = int(sum);
      break;
    case WarpOp::ReduceMinU:
      result = int(umin);
      break;
    case WarpOp::ReduceMaxU:
      result = int(umax);
      break;
    case WarpOp::ReduceMinI:
      result = imin;
      break;
    case WarpOp::ReduceMaxI:
      result = imax;
      break;
    case WarpOp::ReduceAnd:
      result = int(band);
      break;
    case WarpOp::ReduceOr:
      result = int(bor);
      break;
    case WarpOp::ReduceXor:
      result = int(bxor);
      break;
    default:
      break;
  }
  for (uint32_t rest = mask; rest; rest &= rest - 1)
    *static_cast<int*>(calls[std::countr_zero(rest)]->out) = result;
}

}  // namespace

void complete_collective(Block& b, Thread& completing, uint32_t mask) {
  const unsigned warp = completing.warp;
  WarpCall* calls[32] = {};
  for (uint32_t rest = mask; rest; rest &= rest - 1) {
    const unsigned lane = unsigned(std::countr_zero(rest));
    calls[lane] = b.threads[warp * 32 + lane].call;
  }
  const WarpOp op = completing.call->op;
  if (is_shuffle(op))
    compute_shuffle(calls, mask);
  else if (op == WarpOp::Mma)
    compute_mma(calls);
  else if (op == WarpOp::Ldmatrix)
    compute_ldmatrix(b, completing, warp, calls);
  else
    compute_vote(calls, mask, op);
  for (uint32_t rest = mask; rest; rest &= rest - 1) {
    Thread& t = b.threads[warp * 32 + unsigned(std::countr_zero(rest))];
    t.call = nullptr;
    make_runnable(b, t);
  }
  b.warp_waiting[warp] &= ~mask;
}

void warp_collective(WarpCall& c, const std::source_location& site) {
  Thread& t = current_thread(op_name(c.op));
  Block& b = *t.block;
  const uint32_t existing = existing_lanes(b, t.warp);
  auto lane = [&t] { return "lane " + std::to_string(t.lane); };  // for messages only
  if (is_aligned(c.op)) {
    if (existing != ~0u)
      fail(t, "warp-aligned",
           std::string(op_name(c.op)) + " needs all 32 lanes, but warp " + std::to_string(t.warp) +
               " has lanes " + lane_list(existing) + " only (block of " + std::to_string(b.n_threads) +
               " threads)");
    c.mask = ~0u;
  }
  if (!(c.mask >> t.lane & 1))
    fail(t, "warp-mask",
         lane() + " calls " + describe(c, site) + ", whose mask does not include the calling lane");
  if (c.mask & ~existing)
    fail(t, "warp-mask",
         lane() + " calls " + describe(c, site) + ", whose mask names lanes " +
             lane_list(c.mask & ~existing) + " that do not exist (warp " + std::to_string(t.warp) +
             " has lanes " + lane_list(existing) + ")");
  if (is_shuffle(c.op) && (c.width < 1 || c.width > 32 || (c.width & (c.width - 1))))
    fail(t, "warp-width",
         lane() + " calls " + describe(c, site) + " with width " + std::to_string(c.width) +
             " (must be a power of two, 1..32)");

  const unsigned first = t.warp * 32;
  uint32_t& waiting = b.warp_waiting[t.warp];
  for (uint32_t rest = waiting; rest; rest &= rest - 1) {
    const unsigned j = unsigned(std::countr_zero(rest));
    const Thread& u = b.threads[first + j];
    const bool related = (c.mask >> j & 1) || (u.call->mask >> t.lane & 1);
    const bool same = u.call->op == c.op && u.call->mask == c.mask && u.call->size == c.size &&
                      u.call->trans == c.trans && (!is_aligned(c.op) || same_site(u.site, site));
    if (related && !same)
      fail(t, "warp-mismatch",
           lane() + " reaches " + describe(c, site) + " while lane " + std::to_string(j) + " waits at " +
               describe(*u.call, u.site) +
               ": every lane named in a mask must reach the same collective with the same mask");
  }
  for (uint32_t rest = c.mask & ~(1u << t.lane); rest; rest &= rest - 1) {
    const unsigned j = unsigned(std::countr_zero(rest));
    if (b.threads[first + j].state == ThreadState::Done)
      fail(t, "warp-exited",
           lane() + " calls " + describe(c, site) + ", but lane " + std::to_string(j) +
               " named in its mask has already exited");
  }
  t.state = ThreadState::AtWarp;
  t.call = &c;
  t.site = site;
  b.runnable.clear(t.linear);
  waiting |= 1u << t.lane;
  if ((waiting & c.mask) == c.mask) complete_collective(b, t, c.mask);
  suspend(t);
}

void check_lane_exit(Thread& t) {
  Block& b = *t.block;
  for (uint32_t rest = b.warp_waiting[t.warp]; rest; rest &= rest - 1) {
    const Thread& u = b.threads[t.warp * 32 + unsigned(std::countr_zero(rest))];
    if (u.call->mask >> t.lane & 1)
      fail(t, "warp-exited",
           "lane " + std::to_string(t.lane) + " exits while lane " + std::to_string(u.lane) +
               " waits for it at " + describe(*u.call, u.site));
  }
}

unsigned active_mask() {
  Thread& t = current_thread("__activemask");
  const Block& b = *t.block;
  uint32_t mask = 0;
  const uint32_t existing = existing_lanes(b, t.warp);
  for (unsigned l = 0; l < 32; ++l) {
    if (!(existing >> l & 1)) continue;
    const ThreadState s = b.threads[t.warp * 32 + l].state;
    if (s != ThreadState::Done && s != ThreadState::Aborted) mask |= 1u << l;
  }
  return mask;
}

}  // namespace db::emu::detail
