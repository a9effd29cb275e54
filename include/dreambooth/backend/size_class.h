#pragma once
// The size classes of the backends' caching allocators (HostPool, the CUDA DeviceAllocator): a request
// rounds up to 2^k x {1, 1.25, 1.5, 1.75} (at most 25% slack), at least `min_bytes`, a multiple of
// `align` (both powers of two), so blocks freed by one step fit the same requests of the next.
#include <cstddef>

namespace db {

inline size_t pool_size_class(size_t bytes, size_t min_bytes, size_t align) {
  if (bytes <= min_bytes) return min_bytes;
  size_t p = min_bytes;
  while (p * 2 <= bytes) p *= 2;
  size_t c = p * 2;
  if (p == bytes) {
    c = p;
  } else {
    for (size_t q = 5; q <= 7; ++q)
      if (p / 4 * q >= bytes) {
        c = p / 4 * q;
        break;
      }
  }
  return (c + align - 1) / align * align;
}

}  // namespace db
