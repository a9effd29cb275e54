#pragma once
// Built-in model presets (src/models/presets/*.json, embedded in the binary): the single source of
// truth for init-model and the Python reference harness. Each is
//   {description, model_index, unet, text_encoder, vae, scheduler,
//    tokenizer: {vocab_size, pad_token, model_max_length}}.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace db {

std::vector<std::string> preset_names();           // sd1-tiny, sd2-tiny, sd15, sd21
std::string preset_json(const std::string& name);  // the file's text; throws listing the names
nlohmann::json preset(const std::string& name);    // parsed

}  // namespace db
