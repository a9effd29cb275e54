#pragma once
// Number formatting for the CLI's human-readable output (private to src/cli).
#include <cstdint>
#include <cstdio>
#include <string>

namespace db {

// 859520964 -> "859,520,964"
inline std::string with_commas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

inline std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// 3438167536 -> "3.44 GB" (decimal units, as file managers and the Hub show sizes)
inline std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = double(b);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  return u == 0 ? std::to_string(b) + " B" : fixed(v, 2) + " " + units[u];
}

}  // namespace db
