#pragma once
// The real CLIP BPE vocabulary (OpenAI's bpe_simple_vocab_16e6.txt.gz, MIT licence), embedded in the
// binary, and the diffusers tokenizer files derived from it.
#include <string>
#include <vector>

namespace db {

struct ClipVocab {
  std::vector<std::string> tokens;                          // id -> token (byte-level unicode form)
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
};

// The vocabulary as CLIP builds it: 256 byte symbols, the same with "</w>", one token per merge,
// then <|startoftext|> and <|endoftext|>. vocab_size < 49408 keeps only the first merges
// (vocab_size - 514 of them) so that small test models get a real but truncated tokenizer.
ClipVocab clip_vocab(int vocab_size = 49408);

// Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json for
// transformers' CLIPTokenizer into `dir` (which must exist). pad_token: "<|endoftext|>" (SD 1.x) or "!".
void write_clip_tokenizer_files(const std::string& dir, int vocab_size, const std::string& pad_token,
                                int model_max_length = 77);

}  // namespace db
