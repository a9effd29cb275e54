// Formatting helpers for violation messages: sites, index ranges, lane masks, operation names.
#include <cstdio>

#include "block.h"

namespace db::emu::detail {

std::string site_string(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line());
}

std::string dim_string(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

std::string index_list(const std::vector<unsigned>& sorted) {
  std::string out;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(sorted[i]);
    if (j > i) out += "-" + std::to_string(sorted[j]);
    i = j + 1;
  }
  return out;
}

std::string lane_list(uint32_t mask) {
  std::vector<unsigned> lanes;
  for (unsigned l = 0; l < 32; ++l)
    if (mask >> l & 1) lanes.push_back(l);
  return index_list(lanes);
}

std::string hex_mask(uint32_t mask) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", mask);
  return buf;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::SyncWarp:
      return "__syncwarp";
    case WarpOp::ShflIdx:
      return "__shfl_sync";
    case WarpOp::ShflUp:
      return "__shfl_up_sync";
    case WarpOp::ShflDown:
      return "__shfl_down_sync";
    case WarpOp::ShflXor:
      return "__shfl_xor_sync";
    case WarpOp::Ballot:
      return "__ballot_sync";
    case WarpOp::Any:
      return "__any_sync";
    case WarpOp::All:
      return "__all_sync";
    case WarpOp::ReduceAddU:
    case WarpOp::ReduceAddI:
      return "__reduce_add_sync";
    case WarpOp::ReduceMinU:
    case WarpOp::ReduceMinI:
      return "__reduce_min_sync";
    case WarpOp::ReduceMaxU:
    case WarpOp::ReduceMaxI:
      return "__reduce_max_sync";
    case WarpOp::ReduceAnd:
      return "__reduce_and_sync";
    case WarpOp::ReduceOr:
      return "__reduce_or_sync";
    case WarpOp::ReduceXor:
      return "__reduce_xor_sync";
    case WarpOp::Mma:
      return "mma.sync.m16n8k16";
    case WarpOp::Ldmatrix:
      return "ldmatrix.sync";
  }
  return "?";
}

std::string kernel_name(const char* as_written) {
  std::string s = as_written;
  while (s.size() >= 2 && s.front() == '(' && s.back() == ')') s = s.substr(1, s.size() - 2);
  return s;
}

}  // namespace db::emu::detail
