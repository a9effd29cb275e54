#include "dreambooth/models/presets.h"

#include "dreambooth/core/error.h"

extern "C" {
extern const char db_preset_sd1_tiny[];
extern const char db_preset_sd2_tiny[];
extern const char db_preset_sd15[];
extern const char db_preset_sd21[];
}

namespace db {
namespace {

struct Preset {
  const char* name;
  const char* text;
};

const std::vector<Preset>& table() {
  static const std::vector<Preset> t = {{"sd1-tiny", db_preset_sd1_tiny},
                                        {"sd2-tiny", db_preset_sd2_tiny},
                                        {"sd15", db_preset_sd15},
                                        {"sd21", db_preset_sd21}};
  return t;
}

}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> out;
  for (const auto& p : table()) out.push_back(p.name);
  return out;
}

std::string preset_json(const std::string& name) {
  std::string known;
  for (const auto& p : table()) {
    if (name == p.name) return p.text;
    known += (known.empty() ? "" : ", ") + std::string(p.name);
  }
  throw Error("unknown preset '", name, "' (known: ", known, ")");
}

nlohmann::json preset(const std::string& name) {
  ErrorContext ctx("preset ", name);
  return nlohmann::json::parse(preset_json(name));
}

}  // namespace db
