#pragma once
// Shared by the in-process train tests (TrainPipeline.*, TrainValidation.*): tiny shards of cached
// latents for the sd1-tiny golden model, and reading a whole file.
#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dreambooth/core/sha256.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/shard.h"
#include "dreambooth/text/clip_tokenizer.h"
#include "test_helpers.h"

namespace db::test {

// n samples with cached latents (8x8x4 for the sd1-tiny VAE), prompt "<bos> w <eos> ..." (vocab 1000),
// fingerprinted as prepared from the sd1-tiny golden model (train checks them against --model).
inline void write_latent_shard(const std::string& path, const std::string& name, int n, int word,
                               uint32_t seed) {
  const std::string model = golden_path("sd1-tiny/model");
  ShardMeta m;
  m.resolution = 16;
  m.prompt = name;
  m.tokenizer_fingerprint =
      tokenizer_fingerprint(model + "/tokenizer", ClipTokenizer::load(model + "/tokenizer"));
  m.latent_height = m.latent_width = 8;
  m.vae_fingerprint = sha256_files_hex(ModelFolder::open(model).weight_files(Component::Vae).files);
  ShardWriter w(path, m);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 4.f);
  for (int i = 0; i < n; ++i) {
    std::vector<uint8_t> px(16 * 16 * 3, uint8_t(i * 40));
    std::vector<int32_t> ids(77, 999);
    ids[0] = 998, ids[1] = 320, ids[2] = word, ids[3] = 999;
    std::vector<float> mean(8 * 8 * 4), logvar(8 * 8 * 4, -3.f);
    for (float& v : mean) v = nd(rng);
    ShardSample s;
    s.pixels = px.data();
    s.prompt_ids = ids.data();
    s.latent_mean = mean.data();
    s.latent_logvar = logvar.data();
    s.source_path = name + "_" + std::to_string(i) + ".jpg";
    s.sha256 = sha256_hex(s.source_path.data(), s.source_path.size());
    w.append(s);
  }
  w.commit();
}

inline std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f.good()) << p;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace db::test
