// Per-block shared memory: the dynamic region and DB_SHARED variables in a worker's arena, poisoned
// at block start, with guard zones checked at block end (layout in block.h).
#include "dreambooth/emu/shared_memory.h"

#include <algorithm>
#include <cstring>

#include "block.h"
#include "guard.h"

namespace db::emu::detail {
namespace {

size_t align_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

std::string variable_name(const SharedSite& s) {
  return "'" + std::string(s.name) + "' (" + s.file + ":" + std::to_string(s.line) + ", " +
         std::to_string(s.size) + " bytes)";
}

// Damage in the guard at [off, off + kSharedGuardBytes) -> message, or "".
std::string guard_damage(const Block& b, size_t off, const std::string& where) {
  const unsigned char* g = b.arena + off;
  const size_t first = first_damaged(g, kSharedGuardBytes);
  if (first == kSharedGuardBytes) return "";
  return std::to_string(damaged_count(g, kSharedGuardBytes)) + " guard bytes " + where +
         " overwritten (first at +" + std::to_string(first) + "): an out-of-bounds shared-memory write";
}

}  // namespace

void begin_shared_memory(Block& b) {
  unpoison(b.arena, b.arena_bytes);  // the previous block's guards may lie anywhere
  b.vars->clear();
  write_guard(b.arena, kSharedGuardBytes);
  std::memset(b.arena + kSharedGuardBytes, kPoisonByte, b.dynamic_bytes);
  write_guard(b.arena + kSharedGuardBytes + b.dynamic_bytes, kSharedGuardBytes);
  b.top = align_up(2 * kSharedGuardBytes + b.dynamic_bytes, 16);
  b.static_bytes = 0;
}

void* dynamic_shared() {
  Thread& t = current_thread("DB_DYNAMIC_SMEM");
  return t.block->arena + kSharedGuardBytes;
}

void* shared_variable(const SharedSite& site) {
  Thread& t = current_thread("DB_SHARED");
  Block& b = *t.block;
  for (const SharedVar& v : *b.vars)
    if (v.site == &site) return b.arena + v.offset;
  const size_t off = align_up(b.top, std::max<size_t>(site.align, 16));
  const size_t total = b.static_bytes + site.size;
  if (total > kSharedStaticLimit)
    fail(t, "smem-limit",
         "static shared memory reaches " + std::to_string(total) + " bytes with " + variable_name(site) +
             ": over the 48 KiB per-block limit");
  if (total + b.dynamic_bytes > kSharedOptinLimit)
    fail(t, "smem-limit",
         "static (" + std::to_string(total) + " bytes, with " + variable_name(site) + ") + dynamic (" +
             std::to_string(b.dynamic_bytes) + " bytes) shared memory exceeds 227 KiB per block");
  if (off + site.size + kSharedGuardBytes > b.arena_bytes)
    fail(t, "smem-limit", "too many shared variables for the emulator's arena at " + variable_name(site));
  std::memset(b.arena + off, kPoisonByte, site.size);
  write_guard(b.arena + off + site.size, kSharedGuardBytes);
  b.top = off + site.size + kSharedGuardBytes;
  b.static_bytes = total;
  b.vars->push_back({&site, off});
  return b.arena + off;
}

void check_shared_guards(Block& b) {
  std::string damage = guard_damage(b, 0, "before the dynamic shared memory");
  if (damage.empty())
    damage = guard_damage(b, kSharedGuardBytes + b.dynamic_bytes,
                          "after the dynamic shared memory (" + std::to_string(b.dynamic_bytes) + " bytes)");
  for (size_t i = 0; damage.empty() && i < b.vars->size(); ++i) {
    const SharedVar& v = (*b.vars)[i];
    damage = guard_damage(b, v.offset + v.site->size, "after shared variable " + variable_name(*v.site));
  }
  if (!damage.empty()) {
    record_violation(*b.launch, &b.idx, nullptr, "smem-guard", damage);
    b.failed = true;
  }
}

std::string shared_region(const Block& b, const void* p, size_t n) {
  const auto* c = static_cast<const unsigned char*>(p);
  auto inside = [&](size_t off, size_t size) { return c >= b.arena + off && c + n <= b.arena + off + size; };
  if (inside(kSharedGuardBytes, b.dynamic_bytes)) return "dynamic shared memory";
  for (const SharedVar& v : *b.vars)
    if (inside(v.offset, v.site->size)) return "shared variable " + variable_name(*v.site);
  return "";
}

}  // namespace db::emu::detail
