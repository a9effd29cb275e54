#pragma once
// Helpers shared by the safetensors reader and writer (not part of the public API).
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace db::st_detail {

// 'NAME' for messages: control characters escaped, long names cut, so a message stays one line.
std::string qname(std::string_view s);
// The same without quotes (for foreign messages such as nlohmann's).
std::string one_line(std::string_view s);

// The first key that appears twice in one JSON object. level: 0 none, 1 top-level key, 2 a key of an
// object that is the value of top-level key `top`, and so on.
struct DuplicateKey {
  size_t level = 0;
  std::string key, top;
};

// Parses JSON (throws Error "malformed WHAT: ..." with nlohmann's message) and reports the first
// duplicate key, which nlohmann would silently resolve to the last value.
nlohmann::json parse_json_unique_keys(const char* begin, const char* end, const char* what,
                                      DuplicateKey* dup);

}  // namespace db::st_detail
