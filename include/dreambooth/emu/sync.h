#pragma once
// Block-wide synchronisation under emulation. __syncthreads is a true rendezvous of every thread of
// the block: the calling fiber suspends until all have arrived at the same call site (the site comes
// from a defaulted std::source_location argument). A thread that exits while others wait, or threads
// waiting at different sites, is a divergent-barrier violation; a block where no thread can move is a
// deadlock violation.
#include <atomic>
#include <source_location>

namespace db::emu::detail {

enum class BarrierKind : unsigned char { Sync, Count, And, Or };

// Suspends the calling CUDA thread until the block meets at this barrier; returns the reduced
// predicate (count of non-zero predicates, or 0/1 for And/Or; 0 for Sync).
int block_barrier(BarrierKind kind, int predicate, const std::source_location& site);
[[noreturn]] void trap(const std::source_location& site);

}  // namespace db::emu::detail

inline void __syncthreads(std::source_location site = std::source_location::current()) {
  ::db::emu::detail::block_barrier(::db::emu::detail::BarrierKind::Sync, 0, site);
}
inline int __syncthreads_count(int predicate, std::source_location site = std::source_location::current()) {
  return ::db::emu::detail::block_barrier(::db::emu::detail::BarrierKind::Count, predicate, site);
}
inline int __syncthreads_and(int predicate, std::source_location site = std::source_location::current()) {
  return ::db::emu::detail::block_barrier(::db::emu::detail::BarrierKind::And, predicate, site);
}
inline int __syncthreads_or(int predicate, std::source_location site = std::source_location::current()) {
  return ::db::emu::detail::block_barrier(::db::emu::detail::BarrierKind::Or, predicate, site);
}

// Fibers of one block interleave only at suspension points, so a block sees its own writes in program
// order; fences matter only between blocks run by different workers.
inline void __threadfence_block() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_system() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

[[noreturn]] inline void __trap(std::source_location site = std::source_location::current()) {
  ::db::emu::detail::trap(site);
}
