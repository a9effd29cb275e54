// `dreambooth tokenize`: CLIP token ids of prompts, as the model's tokenizer (and diffusers) produce them.
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/text/clip_tokenizer.h"
#include "option_checks.h"

namespace db {
namespace {

std::string tokenizer_dir(const std::string& model) {
  namespace fs = std::filesystem;
  if (fs::exists(fs::path(model) / "tokenizer" / "vocab.json"))
    return (fs::path(model) / "tokenizer").string();
  if (fs::exists(fs::path(model) / "vocab.json")) return model;
  throw Error("--model ", model, ": neither ", (fs::path(model) / "tokenizer" / "vocab.json").string(),
              " nor ", (fs::path(model) / "vocab.json").string(), " exists");
}

int run_tokenize(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()  //
      ("model", po::value<std::string>()->required(),
       "model folder (diffusers layout) or a tokenizer folder")  //
      ("max-length", po::value<int>()->default_value(0),
       "sequence length; 0: the tokenizer's model_max_length (77 for SD)")       //
      ("no-pad", po::bool_switch(), "print BOS + tokens + EOS without padding")  //
      ("tokens", po::bool_switch(),
       "print token strings (byte-level form, \"</w>\" ends a word) instead of ids")  //
      ("json", po::bool_switch(), "print a JSON array: text, ids, tokens, length, truncated");
  po::options_description hidden;
  hidden.add_options()("text", po::value<std::vector<std::string>>()->default_value({}, ""), "");
  po::positional_options_description pos;
  pos.add("text", -1);
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth tokenize --model DIR [options] TEXT...",
          "Tokenizes each TEXT with the model's CLIP tokenizer (DIR/tokenizer, or DIR itself)\n"
          "exactly as transformers' CLIPTokenizer does with padding=\"max_length\" and\n"
          "truncation: BOS, the tokens, EOS, then pad ids up to the sequence length. Prints one\n"
          "line of space-separated ids per text. A text with more tokens than fit is truncated\n"
          "(EOS stays last) and a warning names the part that was cut off. Put -- before texts\n"
          "that start with '-'.",
          opts, vm, &pos, &hidden))
    return 0;
  const auto texts = vm["text"].as<std::vector<std::string>>();
  if (texts.empty()) throw UsageError("tokenize: no TEXT given (see 'dreambooth tokenize --help')");
  for (const std::string& text : texts) check_utf8("tokenize", "TEXT", text);
  const int max_length = vm["max-length"].as<int>();
  if (max_length != 0 && max_length < 2) throw UsageError("tokenize: --max-length must be at least 2");
  const bool no_pad = vm["no-pad"].as<bool>(), tokens = vm["tokens"].as<bool>(), json = vm["json"].as<bool>();

  const std::string dir = tokenizer_dir(vm["model"].as<std::string>());
  ClipTokenizer tok = ClipTokenizer::load(dir);
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& text : texts) {
    ClipEncoding e = no_pad ? tok.encode_unpadded(text, max_length) : tok.encode(text, max_length);
    if (e.truncated)
      log_warn("The following part of your input was truncated because CLIP can only handle sequences up to ",
               e.length, " tokens: ", tok.decode(e.dropped));
    if (json) {
      out.push_back({{"text", text},
                     {"ids", e.ids},
                     {"tokens", tok.id_to_tokens(e.ids)},
                     {"length", e.length},
                     {"truncated", e.truncated}});
      continue;
    }
    std::string line;
    if (tokens) {
      for (const std::string& t : tok.id_to_tokens(e.ids)) line += (line.empty() ? "" : " ") + t;
    } else {
      for (int32_t id : e.ids) line += (line.empty() ? "" : " ") + std::to_string(id);
    }
    std::cout << line << "\n";
  }
  if (json) std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  return 0;
}

}  // namespace

DB_COMMAND(tokenize, "tokenize", "print the CLIP token ids (or tokens) of prompts", run_tokenize);

}  // namespace db
