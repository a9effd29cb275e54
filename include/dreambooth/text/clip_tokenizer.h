#pragma once
// CLIP byte-level BPE tokenizer, id-for-id compatible with transformers' CLIPTokenizer (5.x, backed by
// tokenizers) loaded from a diffusers tokenizer/ folder (vocab.json, merges.txt, tokenizer_config.json,
// special_tokens_map.json).
//
//   ClipTokenizer tok = ClipTokenizer::load("model/tokenizer");
//   ClipEncoding e = tok.encode("a photo of sks dog");  // 77 ids: BOS, tokens, EOS, padding
//   if (e.truncated) log_warn(...);
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace db {

struct ClipEncoding {
  std::vector<int32_t> ids;      // [BOS] + tokens + [EOS] (+ padding)
  int length = 0;                // ids before padding (BOS and EOS included)
  bool truncated = false;        // the text had more than max_length - 2 tokens
  std::vector<int32_t> dropped;  // the tokens cut off by truncation (for warnings)
};

// One special ("added") token: matched in the input text before BPE, as transformers does.
struct ClipAddedToken {
  std::string content;
  int32_t id = -1;
  bool normalized = false;  // matched on the normalized (NFC, lowercased) text instead of the raw text
};

class ClipTokenizer {
 public:
  // `dir` is a tokenizer folder. Errors name the offending file.
  static ClipTokenizer load(const std::string& dir);

  // Padded to max_length (0: the folder's model_max_length) with the pad id; truncated so that EOS
  // stays last.
  ClipEncoding encode(std::string_view text, int max_length = 0) const;
  // The same without padding.
  ClipEncoding encode_unpadded(std::string_view text, int max_length = 0) const;
  // BPE ids of the text alone: no BOS/EOS, no truncation.
  std::vector<int32_t> tokenize(std::string_view text) const;

  // Token strings of ids (byte-level form, e.g. "photo</w>").
  std::vector<std::string> id_to_tokens(const std::vector<int32_t>& ids) const;
  // Readable text of ids (bytes restored, "</w>" -> space), as transformers' decode does.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int32_t token_to_id(const std::string& token) const;  // -1 when absent
  int vocab_size() const { return static_cast<int>(id_to_token_.size()); }
  int model_max_length() const { return model_max_length_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  const std::vector<ClipAddedToken>& added_tokens() const { return added_; }

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

 private:
  ClipTokenizer();
  struct Cache;

  void bpe(const std::string& word, std::vector<int32_t>& out) const;
  void tokenize_normalized(const std::string& normalized, std::vector<int32_t>& out) const;
  void tokenize_raw_piece(std::string_view raw, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (left id, right id) -> (rank, new id)
  std::vector<ClipAddedToken> added_;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  int model_max_length_ = 77;
  std::unique_ptr<Cache> cache_;
};

// The shards' tokenizer_fingerprint of the tokenizer folder `dir` loaded as `tok`: hex SHA-256 over
// vocab.json, merges.txt, then "\npad_id=P\nmodel_max_length=L\n". The pad id is part of it because
// SD 1.x and SD 2.x share vocab and merges but pad with 49407 and 0: their prompt ids differ.
std::string tokenizer_fingerprint(const std::string& dir, const ClipTokenizer& tok);

// The normalization CLIPTokenizer applies (NFC, whitespace runs -> one space, per-character lowercase).
std::string clip_normalize(std::string_view text);

}  // namespace db
