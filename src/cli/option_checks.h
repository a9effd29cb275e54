#pragma once
// Command-line value checks shared by the subcommands: each throws UsageError (exit 2) with one line
// naming the command, the option, what it accepts and what it got, before anything is read or written.
#include <cctype>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "dreambooth/core/error.h"

namespace db {

// Bounds of a numeric option; an open bound excludes its value (e.g. --lr > 0).
struct Range {
  double lo = -INFINITY, hi = INFINITY;
  bool lo_open = false, hi_open = false;
};
inline Range at_least(double lo) {
  return {lo, INFINITY, false, false};
}
inline Range above(double lo) {
  return {lo, INFINITY, true, false};
}

inline std::string describe(const Range& r) {
  const bool has_lo = std::isfinite(r.lo), has_hi = std::isfinite(r.hi);
  if (has_lo && has_hi)
    return str_cat("a number in ", r.lo_open ? "(" : "[", r.lo, ", ", r.hi, r.hi_open ? ")" : "]");
  if (has_lo) return str_cat("a finite number ", r.lo_open ? "> " : ">= ", r.lo);
  if (has_hi) return str_cat("a finite number ", r.hi_open ? "< " : "<= ", r.hi);
  return "a finite number";
}

// NaN and infinities always fail: a comparison with NaN is false, which would silently turn a check off.
inline void check_range(const char* cmd, const char* option, double v, const Range& r) {
  const bool ok =
      std::isfinite(v) && (r.lo_open ? v > r.lo : v >= r.lo) && (r.hi_open ? v < r.hi : v <= r.hi);
  if (!ok) throw UsageError(str_cat(cmd, ": --", option, " must be ", describe(r), " (got ", v, ")"));
}

inline void check_choice(const char* cmd, const char* option, const std::string& v,
                         std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (v == c) return;
    list += (list.empty() ? "" : " | ") + std::string(c);
  }
  throw UsageError(str_cat(cmd, ": --", option, " must be one of ", list, " (got '", v, "')"));
}

// The backends of backend/device.h make_ops.
inline void check_device(const char* cmd, const std::string& v) {
  check_choice(cmd, "device", v, {"auto", "cpu", "cuda"});
}

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points above
// U+10FFFF included), or npos.
inline size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = 0;
    uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return i;
    }
    if (i + size_t(n) >= s.size()) return i;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + size_t(k)]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += size_t(n) + 1;
  }
  return std::string_view::npos;
}

inline void check_utf8(const char* cmd, const char* option, const std::string& v) {
  const size_t at = invalid_utf8_at(v);
  if (at != std::string_view::npos)
    throw UsageError(str_cat(cmd, ": ", std::isupper(static_cast<unsigned char>(option[0])) ? "" : "--",
                             option, " is not valid UTF-8 (bad byte 0x", std::hex,
                             int(static_cast<unsigned char>(v[at])), std::dec, " at offset ", at, ")"));
}

}  // namespace db
