#pragma once
// Guard zones: bytes of a known pattern around allocations and shared variables, checked later. Under
// AddressSanitizer they are also poisoned, so an access is reported at once, at the kernel's line.
#include <sanitizer/asan_interface.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>

#include "block.h"

namespace db::emu::detail {

inline void unpoison(void* p, size_t n) {
  ASAN_UNPOISON_MEMORY_REGION(p, n);
}

inline void write_guard(unsigned char* p, size_t n) {
  ASAN_UNPOISON_MEMORY_REGION(p, n);
  std::memset(p, kGuardByte, n);
  ASAN_POISON_MEMORY_REGION(p, n);
}

// Index of the first byte of [p, p + n) that no longer holds the guard pattern, or n. Every launch
// scans every allocation's guards, so the common case (intact) is a memcmp against the pattern; under
// ASan the bytes are poisoned on purpose, so the scan is uninstrumented and byte by byte instead (ASan
// intercepts memcmp).
#if defined(__SANITIZE_ADDRESS__)
__attribute__((no_sanitize_address)) inline size_t first_damaged(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != kGuardByte) return i;
  return n;
}
#else
inline size_t first_damaged(const unsigned char* p, size_t n) {
  static const auto pattern = [] {
    std::array<unsigned char, 256> a;
    a.fill(kGuardByte);
    return a;
  }();
  for (size_t off = 0; off < n; off += pattern.size()) {
    const size_t len = std::min(pattern.size(), n - off);
    if (std::memcmp(p + off, pattern.data(), len) == 0) continue;
    for (size_t i = off; i < off + len; ++i)
      if (p[i] != kGuardByte) return i;
  }
  return n;
}
#endif

__attribute__((no_sanitize_address)) inline size_t damaged_count(const unsigned char* p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; ++i) c += p[i] != kGuardByte;
  return c;
}

}  // namespace db::emu::detail
