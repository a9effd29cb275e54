#pragma once
// CUDA atomics under emulation. Fibers of one block never interleave inside an atomic, but blocks may
// run on several workers (DB_EMU_WORKERS), so every atomic is a std::atomic_ref operation (relaxed, as
// CUDA's plain atomics are). Each returns the old value. The project forbids float atomics in kernels
// (non-deterministic sums); atomicAdd(float*) exists for completeness only.
#include <atomic>
#include <type_traits>

namespace db::emu::detail {

template <class T>
inline std::atomic_ref<T> atomic_at(T* address) {
  static_assert(std::atomic_ref<T>::is_always_lock_free, "atomic type must be lock free");
  return std::atomic_ref<T>(*address);
}

template <class T, class F>
inline T atomic_update(T* address, F f) {
  auto a = atomic_at(address);
  T old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
}

}  // namespace db::emu::detail

#define DB_EMU_ATOMIC_INT(T)                                                                        \
  inline T atomicAdd(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_at(p).fetch_add(v, std::memory_order_relaxed);                 \
  }                                                                                                 \
  inline T atomicSub(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_at(p).fetch_sub(v, std::memory_order_relaxed);                 \
  }                                                                                                 \
  inline T atomicAnd(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_at(p).fetch_and(v, std::memory_order_relaxed);                 \
  }                                                                                                 \
  inline T atomicOr(T* p, T v) {                                                                    \
    return ::db::emu::detail::atomic_at(p).fetch_or(v, std::memory_order_relaxed);                  \
  }                                                                                                 \
  inline T atomicXor(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_at(p).fetch_xor(v, std::memory_order_relaxed);                 \
  }                                                                                                 \
  inline T atomicExch(T* p, T v) {                                                                  \
    return ::db::emu::detail::atomic_at(p).exchange(v, std::memory_order_relaxed);                  \
  }                                                                                                 \
  inline T atomicMax(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_update(p, [v](T old) { return old < v ? v : old; });           \
  }                                                                                                 \
  inline T atomicMin(T* p, T v) {                                                                   \
    return ::db::emu::detail::atomic_update(p, [v](T old) { return v < old ? v : old; });           \
  }                                                                                                 \
  inline T atomicCAS(T* p, T compare, T v) {                                                        \
    ::db::emu::detail::atomic_at(p).compare_exchange_strong(compare, v, std::memory_order_relaxed); \
    return compare;                                                                                 \
  }
DB_EMU_ATOMIC_INT(int)
DB_EMU_ATOMIC_INT(unsigned)
DB_EMU_ATOMIC_INT(unsigned long long)
DB_EMU_ATOMIC_INT(long long)
#undef DB_EMU_ATOMIC_INT

// Wrapping increment/decrement as PTX atom.inc/.dec define them.
inline unsigned atomicInc(unsigned* p, unsigned limit) {
  return ::db::emu::detail::atomic_update(p, [limit](unsigned old) { return old >= limit ? 0u : old + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned limit) {
  return ::db::emu::detail::atomic_update(
      p, [limit](unsigned old) { return (old == 0 || old > limit) ? limit : old - 1; });
}

inline float atomicAdd(float* p, float v) {
  return ::db::emu::detail::atomic_at(p).fetch_add(v, std::memory_order_relaxed);
}
inline double atomicAdd(double* p, double v) {
  return ::db::emu::detail::atomic_at(p).fetch_add(v, std::memory_order_relaxed);
}
inline float atomicExch(float* p, float v) {
  return ::db::emu::detail::atomic_at(p).exchange(v, std::memory_order_relaxed);
}
