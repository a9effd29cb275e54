#include "dreambooth/text/clip_vocab.h"

#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/text/clip_bytes.h"

extern "C" {
extern const unsigned char db_clip_bpe_gz[];  // src/text/clip_vocab_data.S
extern const uint64_t db_clip_bpe_gz_size;
}

namespace db {
namespace {

constexpr int kFullVocabSize = 49408;
constexpr int kFullMerges = kFullVocabSize - 2 * 256 - 2;  // 48894

std::string gunzip(const unsigned char* data, size_t size) {
  z_stream zs{};
  DB_CHECK(inflateInit2(&zs, 16 + MAX_WBITS) == Z_OK, "embedded CLIP vocabulary: inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(data);
  zs.avail_in = static_cast<uInt>(size);
  std::string out;
  char buf[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof(buf);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw Error("embedded CLIP vocabulary: gzip data is corrupt (zlib error ", rc, ")");
    }
    out.append(buf, sizeof(buf) - zs.avail_out);
  }
  inflateEnd(&zs);
  return out;
}

// All merges of the embedded file (lines 1..48894 after the version header), parsed once.
const std::vector<std::pair<std::string, std::string>>& all_merges() {
  static std::vector<std::pair<std::string, std::string>> merges;
  static std::once_flag once;
  std::call_once(once, [] {
    std::string text = gunzip(db_clip_bpe_gz, db_clip_bpe_gz_size);
    size_t pos = text.find('\n');
    DB_CHECK(pos != std::string::npos, "embedded CLIP vocabulary: no header line");
    merges.reserve(kFullMerges);
    while (static_cast<int>(merges.size()) < kFullMerges) {
      size_t start = pos + 1;
      pos = text.find('\n', start);
      DB_CHECK(pos != std::string::npos, "embedded CLIP vocabulary: only ", merges.size(), " merges");
      std::string line = text.substr(start, pos - start);
      size_t sp = line.find(' ');
      DB_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() &&
                   line.find(' ', sp + 1) == std::string::npos,
               "embedded CLIP vocabulary: malformed merge line ", merges.size() + 2);
      merges.emplace_back(line.substr(0, sp), line.substr(sp + 1));
    }
  });
  return merges;
}

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  DB_CHECK(f.good(), "cannot open ", path.string(), " for writing");
  f.write(text.data(), static_cast<std::streamsize>(text.size()));
  f.close();
  DB_CHECK(f.good(), "failed writing ", path.string());
}

nlohmann::ordered_json added_token(const std::string& content) {
  return {{"__type", "AddedToken"}, {"content", content}, {"lstrip", false},
          {"normalized", true},     {"rstrip", false},    {"single_word", false}};
}

struct ByteTables {
  std::array<uint8_t, 256> order{};
  std::array<std::string, 256> symbol;
  ByteTables() {
    std::array<bool, 256> printable{};
    int n = 0;
    auto add_range = [&](int lo, int hi) {
      for (int b = lo; b <= hi; ++b) printable[b] = true, order[n++] = uint8_t(b), symbol[b] = utf8(b);
    };
    add_range('!', '~');
    add_range(0xA1, 0xAC);
    add_range(0xAE, 0xFF);
    int extra = 0;
    for (int b = 0; b < 256; ++b)
      if (!printable[b]) order[n++] = uint8_t(b), symbol[b] = utf8(256 + extra++);
  }
  static std::string utf8(int cp) {  // cp < 0x800
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    return s;
  }
};

const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

const std::array<uint8_t, 256>& clip_byte_symbol_order() {
  return byte_tables().order;
}
const std::string& clip_byte_symbol(uint8_t b) {
  return byte_tables().symbol[b];
}

ClipVocab clip_vocab(int vocab_size) {
  DB_CHECK(vocab_size >= 514 && vocab_size <= kFullVocabSize, "CLIP vocab_size must be in [514, ",
           kFullVocabSize, "], got ", vocab_size);
  const auto& merges = all_merges();
  const int n_merges = vocab_size - 514;
  ClipVocab v;
  v.tokens.reserve(vocab_size);
  const auto& byte_order = clip_byte_symbol_order();
  for (int b : byte_order) v.tokens.push_back(clip_byte_symbol(b));
  for (int b : byte_order) v.tokens.push_back(clip_byte_symbol(b) + "</w>");
  v.merges.assign(merges.begin(), merges.begin() + n_merges);
  for (const auto& [a, b] : v.merges) v.tokens.push_back(a + b);
  v.tokens.push_back("<|startoftext|>");
  v.tokens.push_back("<|endoftext|>");
  return v;
}

void write_clip_tokenizer_files(const std::string& dir, int vocab_size, const std::string& pad_token,
                                int model_max_length) {
  namespace fs = std::filesystem;
  DB_CHECK(fs::is_directory(dir), "tokenizer folder ", dir, " does not exist");
  DB_CHECK(model_max_length >= 2, "model_max_length must be at least 2, got ", model_max_length);
  ClipVocab v = clip_vocab(vocab_size);
  fs::path d(dir);

  std::string vocab = "{";
  for (size_t i = 0; i < v.tokens.size(); ++i) {
    if (i) vocab += ", ";
    append_json_string(vocab, v.tokens[i]);
    vocab += ": " + std::to_string(i);
  }
  vocab += "}\n";
  write_file(d / "vocab.json", vocab);

  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : v.merges) merges += a + " " + b + "\n";
  write_file(d / "merges.txt", merges);

  nlohmann::ordered_json config = {
      {"add_prefix_space", false},
      {"bos_token", added_token("<|startoftext|>")},
      {"do_lower_case", true},
      {"eos_token", added_token("<|endoftext|>")},
      {"errors", "replace"},
      {"model_max_length", model_max_length},
      {"pad_token", pad_token},
      {"tokenizer_class", "CLIPTokenizer"},
      {"unk_token", added_token("<|endoftext|>")},
  };
  write_file(d / "tokenizer_config.json", config.dump(2) + "\n");

  nlohmann::ordered_json special;
  for (const char* key : {"bos_token", "eos_token", "pad_token", "unk_token"}) {
    nlohmann::ordered_json t = config[key];
    if (t.is_object()) t.erase("__type");
    special[key] = t;
  }
  write_file(d / "special_tokens_map.json", special.dump(2) + "\n");
}

}  // namespace db
