#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <functional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/text/clip_bytes.h"
#include "dreambooth/text/clip_tokenizer.h"
#include "dreambooth/text/clip_vocab.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;
using db::test::TempDir;

namespace {

void write(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

std::string fnv1a64(const std::string& s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string escaped(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', true);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Tokenizer, ByteSymbolsFollowBytesToUnicode) {
  const auto& order = clip_byte_symbol_order();
  EXPECT_EQ(order[0], '!');
  EXPECT_EQ(order[93], '~');
  EXPECT_EQ(order[94], 0xA1);
  EXPECT_EQ(order[188], 0x00);
  EXPECT_EQ(clip_byte_symbol(' '), "\xC4\xA0");  // U+0120 "Ġ"
  EXPECT_EQ(clip_byte_symbol(0), "\xC4\x80");    // U+0100
  EXPECT_EQ(clip_byte_symbol('a'), "a");
}

TEST(Tokenizer, VocabLayout) {
  ClipVocab full = clip_vocab();
  ASSERT_EQ(full.tokens.size(), 49408u);
  EXPECT_EQ(full.merges.size(), 48894u);
  EXPECT_EQ(full.tokens[0], "!");
  EXPECT_EQ(full.tokens[256], "!</w>");
  EXPECT_EQ(full.tokens[320], "a</w>");
  EXPECT_EQ(full.tokens[1125], "photo</w>");
  EXPECT_EQ(full.tokens[49406], "<|startoftext|>");
  EXPECT_EQ(full.tokens[49407], "<|endoftext|>");
  EXPECT_EQ(full.merges[0], (std::pair<std::string, std::string>("i", "n")));
  ClipVocab tiny = clip_vocab(1000);
  ASSERT_EQ(tiny.tokens.size(), 1000u);
  EXPECT_EQ(tiny.merges.size(), 486u);
  EXPECT_EQ(tiny.tokens[998], "<|startoftext|>");
  EXPECT_EQ(tiny.tokens[999], "<|endoftext|>");
  for (int i = 0; i < 998; ++i) EXPECT_EQ(tiny.tokens[i], full.tokens[i]);
  EXPECT_THROW(clip_vocab(513), Error);
  EXPECT_THROW(clip_vocab(49409), Error);
}

TEST(Tokenizer, AcceptanceExampleSd1) {
  TempDir dir("accept");
  write_clip_tokenizer_files(dir.str(), 49408, "<|endoftext|>");
  ClipTokenizer tok = ClipTokenizer::load(dir.str());
  ClipEncoding e = tok.encode("a photo of a dog");
  std::vector<int32_t> expected = {49406, 320, 1125, 539, 320, 1929, 49407};
  expected.resize(77, 49407);
  EXPECT_EQ(e.ids, expected);
  EXPECT_EQ(e.length, 7);
  EXPECT_FALSE(e.truncated);
  EXPECT_EQ(tok.encode_unpadded("a photo of a dog").ids,
            std::vector<int32_t>(expected.begin(), expected.begin() + 7));
  EXPECT_EQ(tok.decode(tok.tokenize("A  photo of a DOG!")), "a photo of a dog !");
  EXPECT_EQ(tok.id_to_tokens({1125}), std::vector<std::string>{"photo</w>"});
}

TEST(Tokenizer, GoldenParityWithTransformers) {
  const nlohmann::json golden = db::test::golden_json("tokenizer/prompts.json");
  const auto texts = golden["prompts"].get<std::vector<std::string>>();
  ASSERT_GE(texts.size(), 250u);
  int checked = 0, failed = 0;
  for (const auto& v : golden["variants"]) {
    const std::string name = v["name"];
    const int vocab_size = v["vocab_size"], max_length = v["max_length"];
    ClipVocab vocab = clip_vocab(vocab_size);
    std::string joined, merges;
    for (size_t i = 0; i < vocab.tokens.size(); ++i) joined += (i ? "\n" : "") + vocab.tokens[i];
    for (size_t i = 0; i < vocab.merges.size(); ++i)
      merges += (i ? "\n" : "") + vocab.merges[i].first + " " + vocab.merges[i].second;
    EXPECT_EQ(fnv1a64(joined), v["vocab_fnv1a64"].get<std::string>()) << name;
    EXPECT_EQ(fnv1a64(merges), v["merges_fnv1a64"].get<std::string>()) << name;

    TempDir dir("golden_" + name);
    write_clip_tokenizer_files(dir.str(), vocab_size, v["pad_token"]);
    ClipTokenizer tok = ClipTokenizer::load(dir.str());
    EXPECT_EQ(tok.pad_id(), v["pad_id"].get<int>()) << name;
    EXPECT_EQ(tok.bos_id(), v["bos_id"].get<int>()) << name;
    EXPECT_EQ(tok.eos_id(), v["eos_id"].get<int>()) << name;
    const auto& encs = v["encodings"];
    ASSERT_EQ(encs.size(), texts.size()) << name;
    for (size_t i = 0; i < texts.size(); ++i) {
      const auto expected = encs[i]["ids"].get<std::vector<int32_t>>();
      std::vector<int32_t> padded = expected;
      padded.resize(size_t(max_length), tok.pad_id());
      ClipEncoding got = tok.encode(texts[i], max_length);
      ClipEncoding unpadded = tok.encode_unpadded(texts[i], max_length);
      ++checked;
      bool ok = got.ids == padded && unpadded.ids == expected && got.length == int(expected.size()) &&
                got.truncated == encs[i]["truncated"].get<bool>();
      if (!ok && ++failed <= 20) {
        std::ostringstream exp, act;
        for (const auto& t : tok.id_to_tokens(expected)) exp << t << ' ';
        for (const auto& t : tok.id_to_tokens(unpadded.ids)) act << t << ' ';
        ADD_FAILURE() << name << " prompt " << i << " " << escaped(texts[i]) << "\n  expected: " << exp.str()
                      << "\n  got:      " << act.str() << "\n  truncated: " << got.truncated;
      }
    }
  }
  EXPECT_EQ(failed, 0) << failed << " of " << checked << " (prompt, variant) pairs differ";
  std::printf("[tokenizer parity] %d of %d (prompt, variant) pairs match transformers %s\n", checked - failed,
              checked, golden["transformers"].get<std::string>().c_str());
}

TEST(Tokenizer, TinyVocabUsesIds998And999) {
  TempDir dir("tiny");
  write_clip_tokenizer_files(dir.str(), 1000, "<|endoftext|>", 77);
  ClipTokenizer tok = ClipTokenizer::load(dir.str());
  EXPECT_EQ(tok.vocab_size(), 1000);
  EXPECT_EQ(tok.bos_id(), 998);
  EXPECT_EQ(tok.eos_id(), 999);
  EXPECT_EQ(tok.pad_id(), 999);
  std::ifstream m(dir.path / "merges.txt");
  std::string first;
  std::getline(m, first);
  EXPECT_EQ(first, "#version: 0.2");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir.path / "tokenizer_config.json"));
  EXPECT_EQ(cfg["tokenizer_class"], "CLIPTokenizer");
  EXPECT_EQ(cfg["model_max_length"], 77);
  EXPECT_EQ(cfg["do_lower_case"], true);
}

TEST(Tokenizer, TruncationKeepsEosLast) {
  TempDir dir("trunc");
  write_clip_tokenizer_files(dir.str(), 49408, "!");
  ClipTokenizer tok = ClipTokenizer::load(dir.str());
  std::string text;
  for (int i = 0; i < 100; ++i) text += "dog ";
  ClipEncoding e = tok.encode(text);
  ASSERT_EQ(e.ids.size(), 77u);
  EXPECT_TRUE(e.truncated);
  EXPECT_EQ(e.length, 77);
  EXPECT_EQ(e.ids.back(), tok.eos_id());
  EXPECT_EQ(e.dropped.size(), 25u);
  EXPECT_EQ(
      tok.decode(e.dropped),
      "dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog dog");
  ClipEncoding s = tok.encode("dog", 4);
  EXPECT_EQ(s.ids, (std::vector<int32_t>{49406, 1929, 49407, 0}));
  EXPECT_THROW(tok.encode("dog", 1), Error);
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  TempDir dir("threads");
  write_clip_tokenizer_files(dir.str(), 49408, "<|endoftext|>");
  ClipTokenizer tok = ClipTokenizer::load(dir.str());
  const std::vector<std::string> texts = {"a photo of sks dog", "Über Größe", "一只狗在桶里",
                                          "🐶👍🏽 it's", "photo of unqtkn dog in a bucket"};
  std::vector<std::vector<int32_t>> expected;
  for (const auto& t : texts) expected.push_back(tok.encode(t).ids);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int r = 0; r < 200; ++r) {
        size_t i = size_t(r + k) % texts.size();
        if (tok.encode(texts[i] + (r % 2 ? "" : " ")).ids != expected[i]) ++mismatches;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Tokenizer, ErrorsNameTheFile) {
  TempDir dir("errors");
  const std::string d = dir.str();
  EXPECT_NE(error_of([&] { ClipTokenizer::load(d + "/nope"); }).find("nope"), std::string::npos);
  EXPECT_NE(error_of([&] { ClipTokenizer::load(d); }).find("vocab.json: missing"), std::string::npos);

  write(dir.path / "vocab.json", "{\"a\": 0, ");
  EXPECT_NE(error_of([&] { ClipTokenizer::load(d); }).find("vocab.json: malformed JSON"), std::string::npos);
  write(dir.path / "vocab.json", "{\"a\": \"x\"}");
  EXPECT_NE(error_of([&] { ClipTokenizer::load(d); }).find("vocab.json: id of token \"a\""),
            std::string::npos);

  write(
      dir.path / "vocab.json",
      R"({"a": 0, "b": 1, "ab": 2, "a</w>": 3, "b</w>": 4, "<|startoftext|>": 5, "<|endoftext|>": 6, "ab</w>": 7})");
  EXPECT_NE(error_of([&] { ClipTokenizer::load(d); }).find("merges.txt: missing"), std::string::npos);
  write(dir.path / "merges.txt", "#version: 0.2\na b\nc d\n");
  std::string err = error_of([&] { ClipTokenizer::load(d); });
  EXPECT_NE(err.find("merges.txt: line 3: token \"c\" is not in vocab.json"), std::string::npos) << err;
  write(dir.path / "merges.txt", "#version: 0.2\na b c\n");
  err = error_of([&] { ClipTokenizer::load(d); });
  EXPECT_NE(err.find("merges.txt: line 2: expected two tokens"), std::string::npos) << err;
  write(dir.path / "merges.txt", "#version: 0.2\nb a\n");
  err = error_of([&] { ClipTokenizer::load(d); });
  EXPECT_NE(err.find("merged token \"ba\""), std::string::npos) << err;

  write(dir.path / "merges.txt", "#version: 0.2\na b\na b</w>\n");
  write(dir.path / "tokenizer_config.json", R"({"pad_token": "!", "model_max_length": 8})");
  err = error_of([&] { ClipTokenizer::load(d); });
  EXPECT_NE(err.find("tokenizer_config.json: pad_token \"!\" is not in"), std::string::npos) << err;
  write(dir.path / "tokenizer_config.json", R"({"model_max_length": "77"})");
  err = error_of([&] { ClipTokenizer::load(d); });
  EXPECT_NE(err.find("tokenizer_config.json: model_max_length is not a number"), std::string::npos) << err;

  // A minimal but valid folder.
  write(dir.path / "tokenizer_config.json", R"({"model_max_length": 7})");
  ClipTokenizer tok = ClipTokenizer::load(d);
  EXPECT_EQ(tok.encode("AB b aba").ids, (std::vector<int32_t>{5, 7, 4, 2, 3, 6, 6}));
  EXPECT_EQ(tok.model_max_length(), 7);
}

TEST(Tokenizer, SpecialTokensMapOverridesConfig) {
  TempDir dir("stm");
  write_clip_tokenizer_files(dir.str(), 49408, "<|endoftext|>");
  // SD 2.x hub folders say "<|endoftext|>" in tokenizer_config.json and "!" in special_tokens_map.json.
  write(dir.path / "special_tokens_map.json", R"({"pad_token": "!"})");
  ClipTokenizer tok = ClipTokenizer::load(dir.str());
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.encode_unpadded("hi!").ids, (std::vector<int32_t>{49406, 1883, 0, 49407}));
}

// SD 1.x and SD 2.x share vocab.json and merges.txt but pad with 49407 and 0: the shards'
// tokenizer_fingerprint covers the pad id and the length, so train tells their shards apart (issue 16
// item 3).
TEST(Tokenizer, FingerprintCoversPadIdAndLength) {
  TempDir dir("fp");
  write_clip_tokenizer_files(dir.str(), 49408, "<|endoftext|>");
  const std::string sd1 = tokenizer_fingerprint(dir.str(), ClipTokenizer::load(dir.str()));
  EXPECT_EQ(sd1, tokenizer_fingerprint(dir.str(), ClipTokenizer::load(dir.str())));
  write(dir.path / "special_tokens_map.json", R"({"pad_token": "!"})");
  const std::string sd2 = tokenizer_fingerprint(dir.str(), ClipTokenizer::load(dir.str()));
  EXPECT_NE(sd1, sd2);
  write(dir.path / "special_tokens_map.json", R"({"pad_token": "<|endoftext|>"})");
  EXPECT_EQ(sd1, tokenizer_fingerprint(dir.str(), ClipTokenizer::load(dir.str())));
  write(dir.path / "tokenizer_config.json", R"({"model_max_length": 64})");
  EXPECT_NE(sd1, tokenizer_fingerprint(dir.str(), ClipTokenizer::load(dir.str())));
  EXPECT_EQ(sd1.size(), 64u);
}
