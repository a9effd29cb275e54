// Emulator settings from the environment (DB_EMU_SCHEDULE, DB_EMU_CP_ASYNC, DB_EMU_WORKERS,
// DB_EMU_STACK_KB, DB_EMU_DEVICES, DB_EMU_PEER, DB_EMU_DEVICE_MB); see dreambooth/emu/options.h.
#include "dreambooth/emu/options.h"

#include <cstdlib>
#include <string_view>

#include "dreambooth/core/error.h"

namespace db::emu {
namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

uint64_t parse_unsigned(const char* var, std::string_view text) {
  uint64_t v = 0;
  if (text.empty()) throw Error(var, ": expected a number, got '", text, "'");
  for (char c : text) {
    if (c < '0' || c > '9') throw Error(var, ": expected a number, got '", text, "'");
    v = v * 10 + uint64_t(c - '0');
  }
  return v;
}

bool sanitized_with_asan() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#else
  return false;
#endif
}

}  // namespace

Options options_from_env() {
  Options o;
  // AddressSanitizer's redzones make frames several times larger.
  if (sanitized_with_asan()) o.stack_bytes = 256 << 10;
  if (const char* s = env("DB_EMU_SCHEDULE")) {
    const std::string_view v = s;
    if (v == "forward") {
      o.schedule = Schedule::Forward;
    } else if (v == "reverse") {
      o.schedule = Schedule::Reverse;
    } else if (v == "lowest-first") {
      o.schedule = Schedule::LowestFirst;
    } else if (v == "random") {
      o.schedule = Schedule::Random;
    } else if (v.starts_with("random:")) {
      o.schedule = Schedule::Random;
      o.seed = parse_unsigned("DB_EMU_SCHEDULE", v.substr(7));
    } else {
      throw Error("DB_EMU_SCHEDULE: expected forward, reverse, random[:SEED] or lowest-first, got '", v, "'");
    }
  }
  if (const char* s = env("DB_EMU_CP_ASYNC")) {
    const std::string_view v = s;
    if (v != "lazy" && v != "eager") throw Error("DB_EMU_CP_ASYNC: expected lazy or eager, got '", v, "'");
    o.cp_async_eager = v == "eager";
  }
  if (const char* s = env("DB_EMU_WORKERS")) {
    const uint64_t n = parse_unsigned("DB_EMU_WORKERS", s);
    if (n < 1 || n > 256) throw Error("DB_EMU_WORKERS: expected 1..256, got ", n);
    o.workers = int(n);
  }
  if (const char* s = env("DB_EMU_STACK_KB")) {
    const uint64_t kb = parse_unsigned("DB_EMU_STACK_KB", s);
    if (kb < 16 || kb > (64 << 10)) throw Error("DB_EMU_STACK_KB: expected 16..65536, got ", kb);
    o.stack_bytes = size_t(kb) << 10;
  }
  if (const char* s = env("DB_EMU_DEVICES")) {
    const uint64_t n = parse_unsigned("DB_EMU_DEVICES", s);
    if (n < 1 || n > 16) throw Error("DB_EMU_DEVICES: expected 1..16, got ", n);
    o.devices = int(n);
  }
  if (const char* s = env("DB_EMU_PEER")) {
    const std::string_view v = s;
    if (v != "0" && v != "1") throw Error("DB_EMU_PEER: expected 0 or 1, got '", v, "'");
    o.peer_access = v == "1";
  }
  if (const char* s = env("DB_EMU_DEVICE_MB"))
    o.device_memory = size_t(parse_unsigned("DB_EMU_DEVICE_MB", s)) << 20;
  return o;
}

Options& options() {
  static Options o = options_from_env();
  return o;
}

std::string describe(const Options& o) {
  std::string s = "schedule=";
  switch (o.schedule) {
    case Schedule::Forward:
      s += "forward";
      break;
    case Schedule::Reverse:
      s += "reverse";
      break;
    case Schedule::Random:
      s += "random:" + std::to_string(o.seed);
      break;
    case Schedule::LowestFirst:
      s += "lowest-first";
      break;
  }
  s += o.cp_async_eager ? " cp.async=eager" : " cp.async=lazy";
  s += " workers=" + std::to_string(o.workers);
  s += " stack=" + std::to_string(o.stack_bytes >> 10) + "KiB";
  if (o.devices > 1) s += " devices=" + std::to_string(o.devices) + (o.peer_access ? " peer=1" : " peer=0");
  if (o.device_memory) s += " device_mb=" + std::to_string(o.device_memory >> 20);
  return s;
}

}  // namespace db::emu
