#pragma once
// Shared memory under emulation. Each block gets an arena (one per worker, reused): a guard zone, the
// dynamic region (size from the launch), a guard zone, then every static DB_SHARED variable in the
// order the block first reaches it, each followed by a guard zone. The whole of it is poisoned (0xFF:
// NaN in f32/bf16) when the block starts, and guard bytes are checked when it ends.
//
//   DB_SHARED(float[32][33], tile);   // float (&tile)[32][33], same address for every thread of a block
//   DB_DYNAMIC_SMEM(float, dyn);      // float* dyn, 16-byte aligned, launch's dynamic bytes
//
// A DB_SHARED statement is identified by a function-local static SharedSite, so the same variable is
// found however often (and from however many threads) the statement runs.
#include <cstddef>
#include <type_traits>

namespace db::emu {

struct SharedSite {
  const char* name;
  const char* file;
  unsigned line;
  size_t size;
  size_t align;
};

namespace detail {
void* shared_variable(const SharedSite& site);  // this block's instance of the variable
void* dynamic_shared();                         // this block's dynamic region
}  // namespace detail

}  // namespace db::emu

#define DB_SHARED(type, name)                                                                              \
  static constexpr ::db::emu::SharedSite db_emu_shared_site_##name{#name, __FILE__, __LINE__,              \
                                                                   sizeof(::std::type_identity_t<type>),   \
                                                                   alignof(::std::type_identity_t<type>)}; \
  [[maybe_unused]] ::std::type_identity_t<type>& name = *static_cast<::std::type_identity_t<type>*>(       \
      ::db::emu::detail::shared_variable(db_emu_shared_site_##name))

#define DB_DYNAMIC_SMEM(type, name) \
  [[maybe_unused]] type* name = static_cast<type*>(::db::emu::detail::dynamic_shared())
