#pragma once
// Guard zones: bytes of a known pattern around allocations and shared variables, checked later. Under
// AddressSanitizer they are also poisoned, so an access is reported at once, at the kernel's line.
#include <sanitizer/asan_interface.h>

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

// Index of the first byte of [p, p + n) that no longer holds the guard pattern, or n. Reads poisoned
// memory on purpose, hence no instrumentation (and no memcmp, which ASan intercepts).
__attribute__((no_sanitize_address)) inline size_t first_damaged(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != kGuardByte) return i;
  return n;
}

__attribute__((no_sanitize_address)) inline size_t damaged_count(const unsigned char* p, size_t n) {
  size_t c = 0;
  for (size_t i = 0; i < n; ++i) c += p[i] != kGuardByte;
  return c;
}

}  // namespace db::emu::detail
