// CLIPTokenizer as transformers 5.x builds it on tokenizers:
//   added tokens  split out of the raw text (non-normalized ones) or of the normalized text
//   normalizer    NFC, \s+ -> " ", Lowercase (per character, full mapping)
//   pre-tokenizer Split on the CLIP regex (matches kept), then ByteLevel (GPT-2 regex, byte -> symbol)
//   model         BPE with end_of_word_suffix "</w>", unk "<|endoftext|>"
//   post          RobertaProcessing: BOS + ids + EOS; truncation keeps EOS; padding with the pad id
#include "dreambooth/text/clip_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf8.h>
#include <unicode/unistr.h>
#include <unicode/uniset.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/text/clip_bytes.h"

namespace db {
namespace {

// tokenizers uses Oniguruma (Unicode 16) for \p{L}/\p{N} and Rust's char::to_lowercase; the system ICU
// may be older. These code points are letters/numbers/lowercase mappings there but unassigned in
// ICU 72 (Unicode 15); they are consulted only for code points ICU reports as unassigned.
constexpr std::pair<UChar32, UChar32> kExtraLetters[] = {
    {0x1C89, 0x1C8A},   {0xA7CB, 0xA7CD},   {0xA7DA, 0xA7DC},   {0x105C0, 0x105F3}, {0x10D4A, 0x10D65},
    {0x10D6F, 0x10D85}, {0x10EC2, 0x10EC4}, {0x11380, 0x11389}, {0x1138B, 0x1138B}, {0x1138E, 0x1138E},
    {0x11390, 0x113B5}, {0x113B7, 0x113B7}, {0x113D1, 0x113D1}, {0x113D3, 0x113D3}, {0x11BC0, 0x11BE0},
    {0x13460, 0x143FA}, {0x16100, 0x1611D}, {0x16D40, 0x16D6C}, {0x18CFF, 0x18CFF}, {0x1E5D0, 0x1E5ED},
    {0x1E5F0, 0x1E5F0}, {0x2EBF0, 0x2EE5D}};
constexpr std::pair<UChar32, UChar32> kExtraNumbers[] = {
    {0x10D40, 0x10D49}, {0x116D0, 0x116E3}, {0x11BF0, 0x11BF9}, {0x16130, 0x16139},
    {0x16D70, 0x16D79}, {0x1CCF0, 0x1CCF9}, {0x1E5F1, 0x1E5FA}};
// (upper, lower); ranges of consecutive pairs are written out by the loop in extra_lower().
constexpr std::pair<UChar32, UChar32> kExtraLower[] = {{0x1C89, 0x1C8A}, {0xA7CB, 0x0264}, {0xA7CC, 0xA7CD},
                                                       {0xA7CE, 0xA7CF}, {0xA7D2, 0xA7D3}, {0xA7D4, 0xA7D5},
                                                       {0xA7DA, 0xA7DB}, {0xA7DC, 0x019B}};

bool in_ranges(UChar32 c, const std::pair<UChar32, UChar32>* r, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (c >= r[i].first && c <= r[i].second) return true;
  return false;
}

UChar32 extra_lower(UChar32 c) {
  for (const auto& [u, l] : kExtraLower)
    if (c == u) return l;
  if (c >= 0x10D50 && c <= 0x10D65) return c + 0x20;  // Garay
  if (c >= 0x16EA0 && c <= 0x16EB8) return c + 0x1B;  // Beria Erfe
  return c;
}

enum class CharClass { Space, Letter, Number, Other };

CharClass classify(UChar32 c) {
  if (c == ' ') return CharClass::Space;
  if (c < 0x80) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::Letter;
    if (c >= '0' && c <= '9') return CharClass::Number;
  }
  if (u_hasBinaryProperty(c, UCHAR_WHITE_SPACE)) return CharClass::Space;
  const uint32_t mask = U_GET_GC_MASK(c);
  if (mask & U_GC_L_MASK) return CharClass::Letter;
  if (mask & U_GC_N_MASK) return CharClass::Number;
  if (u_charType(c) == U_UNASSIGNED) {
    if (in_ranges(c, kExtraLetters, std::size(kExtraLetters))) return CharClass::Letter;
    if (in_ranges(c, kExtraNumbers, std::size(kExtraNumbers))) return CharClass::Number;
  }
  return CharClass::Other;
}

void append_utf8(std::string& out, UChar32 c) {
  char buf[4];
  int32_t n = 0;
  U8_APPEND_UNSAFE(buf, n, c);
  out.append(buf, n);
}

struct CodePoint {
  UChar32 c;
  size_t begin, end;  // byte range in the UTF-8 string
};

std::vector<CodePoint> decode_utf8(std::string_view s) {
  std::vector<CodePoint> out;
  out.reserve(s.size());
  int32_t i = 0, n = static_cast<int32_t>(s.size());
  while (i < n) {
    int32_t b = i;
    UChar32 c;
    U8_NEXT(s.data(), i, n, c);
    if (c < 0) c = 0xFFFD;
    out.push_back({c, size_t(b), size_t(i)});
  }
  return out;
}

// Pieces of the CLIP regex
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (clip_literals = true), or of the GPT-2 regex ByteLevel applies to each of them (digit runs instead
// of single digits, no literals). Whitespace is dropped: it never occurs inside a match.
void split_pieces(std::string_view s, bool clip_literals, std::vector<std::string_view>& out) {
  const std::vector<CodePoint> cps = decode_utf8(s);
  const size_t n = cps.size();
  std::vector<CharClass> cls(n);
  for (size_t i = 0; i < n; ++i) cls[i] = classify(cps[i].c);
  auto emit = [&](size_t i, size_t j) {
    out.push_back(s.substr(cps[i].begin, cps[j - 1].end - cps[i].begin));
  };
  size_t i = 0;
  while (i < n) {
    if (cls[i] == CharClass::Space) {
      ++i;
      continue;
    }
    std::string_view rest = s.substr(cps[i].begin);
    if (clip_literals) {
      bool lit = false;
      for (std::string_view l : {std::string_view("<|startoftext|>"), std::string_view("<|endoftext|>")}) {
        if (rest.starts_with(l)) {
          out.push_back(rest.substr(0, l.size()));
          i += l.size();  // ASCII: one code point per byte
          lit = true;
          break;
        }
      }
      if (lit) continue;
    }
    if (cps[i].c == '\'') {
      size_t len = 0;
      for (std::string_view c : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}) {
        if (rest.starts_with(c)) {
          len = c.size();
          break;
        }
      }
      if (len) {
        out.push_back(rest.substr(0, len));
        i += len;
        continue;
      }
    }
    size_t j = i + 1;
    if (cls[i] == CharClass::Letter) {
      while (j < n && cls[j] == CharClass::Letter) ++j;
    } else if (cls[i] == CharClass::Number) {
      if (!clip_literals)
        while (j < n && cls[j] == CharClass::Number) ++j;
    } else {
      while (j < n && cls[j] == CharClass::Other) ++j;
    }
    emit(i, j);
    i = j;
  }
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  DB_CHECK(f.good(), "cannot open ", path.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::string text = read_text_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string(), ": malformed JSON: ", e.what());
  }
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

}  // namespace

std::string clip_normalize(std::string_view text) {
  // tokenizers' NFC (unicode-normalization-alignments) has Unicode 9.0 tables: later characters have
  // combining class 0 and no (de)compositions there. ICU's filtered normalizer reproduces exactly that.
  struct Nfc9 {
    icu::UnicodeSet set;
    std::unique_ptr<icu::FilteredNormalizer2> nfc;
    Nfc9() {
      UErrorCode st = U_ZERO_ERROR;
      set.applyPattern(icu::UnicodeString("[:age=9.0:]", -1, US_INV), st);
      set.freeze();
      const icu::Normalizer2* base = icu::Normalizer2::getNFCInstance(st);
      DB_CHECK(U_SUCCESS(st), "ICU: cannot set up NFC normalization (", u_errorName(st), ")");
      nfc = std::make_unique<icu::FilteredNormalizer2>(*base, set);
    }
  };
  static const Nfc9 nfc9;
  UErrorCode st = U_ZERO_ERROR;
  icu::UnicodeString s = icu::UnicodeString::fromUTF8(icu::StringPiece(text.data(), int32_t(text.size())));
  if (!nfc9.nfc->isNormalized(s, st)) {
    icu::UnicodeString n;
    nfc9.nfc->normalize(s, n, st);
    s = std::move(n);
  }
  DB_CHECK(U_SUCCESS(st), "ICU: NFC normalization failed (", u_errorName(st), ")");
  std::string out;
  out.reserve(text.size());
  bool prev_space = false;
  for (int32_t i = 0; i < s.length();) {
    UChar32 c = s.char32At(i);
    i += U16_LENGTH(c);
    if (c == ' ' || ((c > 0x7F || (c >= 0x09 && c <= 0x0D)) && u_hasBinaryProperty(c, UCHAR_WHITE_SPACE))) {
      if (!prev_space) out += ' ';
      prev_space = true;
      continue;
    }
    prev_space = false;
    if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      continue;
    }
    if (u_charType(c) == U_UNASSIGNED) {
      append_utf8(out, extra_lower(c));
      continue;
    }
    // Full (possibly multi-character) lowercase of the character alone, like Rust's char::to_lowercase.
    UChar src[2], dst[8];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, c);
    UErrorCode e = U_ZERO_ERROR;
    int32_t len = u_strToLower(dst, 8, src, src_len, "", &e);
    DB_CHECK(U_SUCCESS(e), "ICU: lowercase failed (", u_errorName(e), ")");
    for (int32_t k = 0; k < len;) {
      UChar32 l;
      U16_NEXT(dst, k, len, l);
      append_utf8(out, l);
    }
  }
  return out;
}

struct ClipTokenizer::Cache {
  std::shared_mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};

ClipTokenizer::ClipTokenizer() : cache_(std::make_unique<Cache>()) {}
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

ClipTokenizer ClipTokenizer::load(const std::string& dir) {
  namespace fs = std::filesystem;
  ClipTokenizer t;
  const fs::path d(dir);
  DB_CHECK(fs::is_directory(d), "tokenizer folder ", dir, " does not exist");

  const fs::path vocab_path = d / "vocab.json";
  DB_CHECK(fs::exists(vocab_path), vocab_path.string(),
           ": missing (a CLIP tokenizer folder has vocab.json and merges.txt)");
  {
    nlohmann::json v = read_json_file(vocab_path);
    DB_CHECK(v.is_object() && !v.empty(), vocab_path.string(),
             ": expected a non-empty object of token -> id");
    int64_t max_id = -1;
    for (auto it = v.begin(); it != v.end(); ++it) {
      DB_CHECK(it.value().is_number_integer(), vocab_path.string(), ": id of token \"", it.key(),
               "\" is not an integer");
      int64_t id = it.value().get<int64_t>();
      DB_CHECK(id >= 0 && id < (1 << 24), vocab_path.string(), ": id ", id, " of token \"", it.key(),
               "\" out of range");
      max_id = std::max(max_id, id);
    }
    t.id_to_token_.assign(size_t(max_id + 1), std::string());
    t.vocab_.reserve(v.size());
    for (auto it = v.begin(); it != v.end(); ++it) {
      int32_t id = it.value().get<int32_t>();
      t.vocab_[it.key()] = id;
      t.id_to_token_[size_t(id)] = it.key();
    }
  }

  const fs::path merges_path = d / "merges.txt";
  DB_CHECK(fs::exists(merges_path), merges_path.string(),
           ": missing (a CLIP tokenizer folder has vocab.json and merges.txt)");
  {
    std::string text = read_text_file(merges_path);
    size_t pos = 0;
    int line_no = 0;
    int32_t rank = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      pos = end + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.starts_with("#version")) continue;
      size_t sp = line.find(' ');
      DB_CHECK(sp != std::string_view::npos && line.find(' ', sp + 1) == std::string_view::npos,
               merges_path.string(), ": line ", line_no, ": expected two tokens separated by one space");
      std::string a(line.substr(0, sp)), b(line.substr(sp + 1));
      auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), iab = t.vocab_.find(a + b);
      DB_CHECK(ia != t.vocab_.end(), merges_path.string(), ": line ", line_no, ": token \"", a,
               "\" is not in vocab.json");
      DB_CHECK(ib != t.vocab_.end(), merges_path.string(), ": line ", line_no, ": token \"", b,
               "\" is not in vocab.json");
      DB_CHECK(iab != t.vocab_.end(), merges_path.string(), ": line ", line_no, ": merged token \"", a + b,
               "\" is not in vocab.json");
      t.merges_.try_emplace(pair_key(ia->second, ib->second), rank++, iab->second);
    }
  }

  // Special tokens as transformers resolves them: special_tokens_map.json overrides tokenizer_config.json;
  // a plain string is not normalized, an AddedToken object says; the last of bos, eos, unk, pad to name a
  // token sets its flags.
  nlohmann::json config = nlohmann::json::object(), special_map = nlohmann::json::object();
  const fs::path config_path = d / "tokenizer_config.json", special_path = d / "special_tokens_map.json";
  if (fs::exists(config_path)) config = read_json_file(config_path);
  if (fs::exists(special_path)) special_map = read_json_file(special_path);
  DB_CHECK(config.is_object(), config_path.string(), ": expected a JSON object");
  DB_CHECK(special_map.is_object(), special_path.string(), ": expected a JSON object");

  if (config.contains("model_max_length") && !config["model_max_length"].is_null()) {
    const auto& m = config["model_max_length"];
    DB_CHECK(m.is_number(), config_path.string(), ": model_max_length is not a number");
    double v = m.get<double>();
    DB_CHECK(v >= 2, config_path.string(), ": model_max_length ", v, " is too small");
    // transformers writes 1e30 for "no limit"; CLIP's text encoder has 77 positions.
    t.model_max_length_ = v > 1e6 ? 77 : static_cast<int>(v);
  }

  auto resolve = [&](const char* key, const char* fallback, int32_t& id_out) {
    const fs::path* src = &config_path;
    nlohmann::json value = fallback;
    if (special_map.contains(key) && !special_map[key].is_null()) {
      value = special_map[key], src = &special_path;
    } else if (config.contains(key) && !config[key].is_null()) {
      value = config[key];
    }
    ClipAddedToken tok;
    if (value.is_string()) {
      tok.content = value.get<std::string>();
    } else if (value.is_object() && value.contains("content") && value["content"].is_string()) {
      tok.content = value["content"].get<std::string>();
      auto flag = [&](const char* name) {
        if (!value.contains(name) || value[name].is_null()) return false;
        DB_CHECK(value[name].is_boolean(), src->string(), ": ", key, ".", name, " is not true/false");
        return value[name].get<bool>();
      };
      tok.normalized = flag("normalized");
      DB_CHECK(!flag("lstrip") && !flag("rstrip") && !flag("single_word"), src->string(), ": ", key,
               ": lstrip/rstrip/single_word are not supported");
    } else {
      throw Error(src->string(), ": ", key, " must be a string or an AddedToken object");
    }
    DB_CHECK(!tok.content.empty(), src->string(), ": ", key, " is empty");
    auto it = t.vocab_.find(tok.content);
    DB_CHECK(it != t.vocab_.end(), src->string(), ": ", key, " \"", tok.content, "\" is not in ",
             vocab_path.string());
    tok.id = it->second;
    id_out = tok.id;
    auto same = std::find_if(t.added_.begin(), t.added_.end(),
                             [&](const auto& a) { return a.content == tok.content; });
    if (same != t.added_.end())
      *same = tok;
    else
      t.added_.push_back(tok);
  };
  resolve("bos_token", "<|startoftext|>", t.bos_id_);
  resolve("eos_token", "<|endoftext|>", t.eos_id_);
  resolve("unk_token", "<|endoftext|>", t.unk_id_);
  resolve("pad_token", "<|endoftext|>", t.pad_id_);
  // Normalized tokens are matched against normalized text, so their content is normalized too.
  for (auto& a : t.added_)
    if (a.normalized) a.content = clip_normalize(a.content);
  return t;
}

int32_t ClipTokenizer::token_to_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

void ClipTokenizer::bpe(const std::string& word, std::vector<int32_t>& out) const {
  {
    std::shared_lock lock(cache_->mutex);
    auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> sym;
  for (size_t i = 0; i < word.size();) {
    size_t len = 1;
    unsigned char b = static_cast<unsigned char>(word[i]);
    if (b >= 0xF0)
      len = 4;
    else if (b >= 0xE0)
      len = 3;
    else if (b >= 0xC0)
      len = 2;
    std::string s = word.substr(i, len);
    i += len;
    if (i >= word.size()) s += "</w>";
    auto it = vocab_.find(s);
    if (it != vocab_.end()) {
      sym.push_back(it->second);
    } else {
      DB_CHECK(unk_id_ >= 0, "tokenizer: symbol \"", s,
               "\" is not in the vocabulary and there is no unk token");
      sym.push_back(unk_id_);
    }
  }
  // Repeatedly apply the lowest-ranked merge at all its places, left to right: the same result as
  // tokenizers' priority queue (lowest rank, then leftmost).
  while (sym.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), best_new = -1;
    uint64_t best_key = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      auto it = merges_.find(pair_key(sym[i], sym[i + 1]));
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_new = it->second.second;
        best_key = it->first;
      }
    }
    if (best_new < 0) break;
    size_t w = 0;
    for (size_t i = 0; i < sym.size();) {
      if (i + 1 < sym.size() && pair_key(sym[i], sym[i + 1]) == best_key) {
        sym[w++] = best_new;
        i += 2;
      } else {
        sym[w++] = sym[i++];
      }
    }
    sym.resize(w);
  }
  out.insert(out.end(), sym.begin(), sym.end());
  std::unique_lock lock(cache_->mutex);
  if (cache_->words.size() >= 100000) cache_->words.clear();
  cache_->words.emplace(word, std::move(sym));
}

void ClipTokenizer::tokenize_normalized(const std::string& normalized, std::vector<int32_t>& out) const {
  std::vector<std::string_view> pieces, sub;
  split_pieces(normalized, true, pieces);
  std::string word;
  for (std::string_view piece : pieces) {
    sub.clear();
    split_pieces(piece, false, sub);
    for (std::string_view w : sub) {
      word.clear();
      for (unsigned char b : w) word += clip_byte_symbol(b);
      bpe(word, out);
    }
  }
}

// Splits `text` at the leftmost-longest occurrences of the added tokens with normalized == want_normalized;
// calls on_text for the text between them and pushes the ids of the tokens.
template <typename F>
static void split_added(std::string_view text, const std::vector<ClipAddedToken>& added, bool want_normalized,
                        std::vector<int32_t>& out, F&& on_text) {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const ClipAddedToken* best = nullptr;
    for (const auto& a : added)
      if (a.normalized == want_normalized && text.compare(i, a.content.size(), a.content) == 0 &&
          (!best || a.content.size() > best->content.size()))
        best = &a;
    if (!best) {
      ++i;
      continue;
    }
    if (i > start) on_text(text.substr(start, i - start));
    out.push_back(best->id);
    i += best->content.size();
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

void ClipTokenizer::tokenize_raw_piece(std::string_view raw, std::vector<int32_t>& out) const {
  std::string normalized = clip_normalize(raw);
  split_added(normalized, added_, true, out,
              [&](std::string_view s) { tokenize_normalized(std::string(s), out); });
}

std::vector<int32_t> ClipTokenizer::tokenize(std::string_view text) const {
  std::vector<int32_t> out;
  split_added(text, added_, false, out, [&](std::string_view s) { tokenize_raw_piece(s, out); });
  return out;
}

ClipEncoding ClipTokenizer::encode_unpadded(std::string_view text, int max_length) const {
  if (max_length <= 0) max_length = model_max_length_;
  DB_CHECK(max_length >= 2, "tokenizer: max_length must be at least 2 (BOS and EOS), got ", max_length);
  std::vector<int32_t> toks = tokenize(text);
  ClipEncoding e;
  const size_t keep = std::min(toks.size(), size_t(max_length - 2));
  e.truncated = keep < toks.size();
  e.dropped.assign(toks.begin() + keep, toks.end());
  e.ids.reserve(size_t(max_length));
  e.ids.push_back(bos_id_);
  e.ids.insert(e.ids.end(), toks.begin(), toks.begin() + keep);
  e.ids.push_back(eos_id_);
  e.length = static_cast<int>(e.ids.size());
  return e;
}

ClipEncoding ClipTokenizer::encode(std::string_view text, int max_length) const {
  if (max_length <= 0) max_length = model_max_length_;
  ClipEncoding e = encode_unpadded(text, max_length);
  e.ids.resize(size_t(max_length), pad_id_);
  return e;
}

std::vector<std::string> ClipTokenizer::id_to_tokens(const std::vector<int32_t>& ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    DB_CHECK(id >= 0 && size_t(id) < id_to_token_.size() && !id_to_token_[size_t(id)].empty(),
             "tokenizer: id ", id, " is not in the vocabulary");
    out.push_back(id_to_token_[size_t(id)]);
  }
  return out;
}

std::string ClipTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  static const std::unordered_map<std::string, uint8_t> byte_of = [] {
    std::unordered_map<std::string, uint8_t> m;
    for (int b = 0; b < 256; ++b) m[clip_byte_symbol(uint8_t(b))] = uint8_t(b);
    return m;
  }();
  std::string out;
  const std::vector<std::string> toks = id_to_tokens(ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string& tok = toks[i];
    if (std::any_of(added_.begin(), added_.end(), [&](const auto& a) { return a.id == ids[i]; })) {
      if (!skip_special_tokens) out += tok;
      continue;
    }
    for (const CodePoint& cp : decode_utf8(tok)) {
      std::string sym = tok.substr(cp.begin, cp.end - cp.begin);
      auto it = byte_of.find(sym);
      out += it != byte_of.end() ? std::string(1, char(it->second)) : sym;
    }
  }
  // "</w>" marks word ends; after byte restoration it reads as the literal text "</w>".
  std::string text;
  for (size_t p = 0; p < out.size();) {
    if (out.compare(p, 4, "</w>") == 0) {
      text += ' ';
      p += 4;
    } else {
      text += out[p++];
    }
  }
  size_t b = text.find_first_not_of(' '), e = text.find_last_not_of(' ');
  return b == std::string::npos ? std::string() : text.substr(b, e - b + 1);
}

std::string tokenizer_fingerprint(const std::string& dir, const ClipTokenizer& tok) {
  const std::filesystem::path d(dir);
  Sha256 h;
  for (const char* name : {"vocab.json", "merges.txt"}) {
    const std::string path = (d / name).string();
    std::ifstream in(path, std::ios::binary);
    DB_CHECK(in, "cannot read ", path);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    h.update(bytes.str());
  }
  h.update(str_cat("\npad_id=", tok.pad_id(), "\nmodel_max_length=", tok.model_max_length(), "\n"));
  return h.hex_digest();
}

}  // namespace db
