// TrainValidation.*: `train --validation-prompt` in-process on the sd1-tiny golden model with tiny
// shards of cached latents: the validation folders hold PNGs of the model's resolution and a manifest,
// training is bit-identical with and without validation, and the last step's images equal what
// `generate` makes from the saved pipeline with the recorded seed.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/shard.h"
#include "dreambooth/pipelines/generate.h"
#include "dreambooth/pipelines/train.h"
#include "test_helpers.h"
#include "train_test_data.h"

namespace fs = std::filesystem;
using namespace db;
using db::test::slurp;
using db::test::write_latent_shard;

namespace {

std::string model() {
  return db::test::golden_model("sd1-tiny");
}

TrainOptions base_options(const std::string& tmp) {
  write_latent_shard(tmp + "/inst.h5", "inst", 2, 500, 1);
  write_latent_shard(tmp + "/class.h5", "class", 3, 600, 2);
  TrainOptions o;
  o.model = model();
  o.instance = {tmp + "/inst.h5"};
  o.class_data = {tmp + "/class.h5"};
  o.seed = 42;
  o.max_steps = 4;
  o.lr = 1e-3f;
  o.checkpoint_every = 4;
  o.progress_seconds = 1e9;
  return o;
}

const char* kPrompt = "a photo of sks dog";

}  // namespace

TEST(TrainValidation, ImagesDoNotPerturbTrainingAndMatchGenerate) {
  const db::test::TempDir tmp("train_val");
  const TrainOptions o = base_options(tmp.str());

  TrainOptions a = o;
  a.out = tmp.str() + "/plain";
  run_train(a);

  TrainOptions b = o;
  b.out = tmp.str() + "/val";
  b.validation_prompt = kPrompt;
  b.validation_every = 2;
  b.validation_images = 2;
  b.validation_steps = 4;
  run_train(b);

  // Training is bit-identical: the saved weights, the checkpoint's weights and AdamW moments, metrics'
  // losses.
  for (const char* f :
       {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
        "checkpoint-4/optimizer.safetensors", "checkpoint-4/unet/diffusion_pytorch_model.safetensors",
        "checkpoint-4/text_encoder/model.safetensors"})
    EXPECT_TRUE(slurp(a.out + "/" + f) == slurp(b.out + "/" + f)) << f << " differs with validation on";
  EXPECT_FALSE(fs::exists(a.out + "/validation"));

  // The folders: step-2 and step-4 (every 2, the last step), each with 2 PNGs at the model's size.
  const auto models = load_generate_models(model());
  const int side = models->info().unet_sample_size * models->info().vae_scale_factor;
  std::vector<std::string> dirs;
  for (const auto& e : fs::directory_iterator(b.out + "/validation")) dirs.push_back(e.path().filename());
  std::sort(dirs.begin(), dirs.end());
  EXPECT_EQ(dirs, (std::vector<std::string>{"step-2", "step-4"}));  // no temporary folder left behind
  for (const char* step : {"step-2", "step-4"}) {
    const std::string d = b.out + "/validation/" + step;
    for (const char* f : {"00000.png", "00001.png"}) {
      ASSERT_TRUE(fs::exists(d + "/" + f)) << d << "/" << f;
      const std::string bytes = slurp(d + "/" + f);
      ASSERT_GE(bytes.size(), 8u);
      EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
      const Image im = read_image(d + "/" + f);
      EXPECT_EQ(im.width, side);
      EXPECT_EQ(im.height, side);
    }
    std::ifstream mf(d + "/manifest.jsonl");
    std::string line;
    int n = 0;
    while (std::getline(mf, line)) {
      const auto j = nlohmann::json::parse(line);
      EXPECT_EQ(j.at("index").get<int>(), n);
      EXPECT_EQ(j.at("prompt").get<std::string>(), kPrompt);
      EXPECT_EQ(j.at("seed").get<uint64_t>(), validation_seed(o.seed));
      EXPECT_EQ(j.at("steps").get<int>(), 4);
      ++n;
    }
    EXPECT_EQ(n, 2);
  }
  // Weights moved between steps 2 and 4, and the images show it.
  EXPECT_FALSE(slurp(b.out + "/validation/step-2/00000.png") ==
               slurp(b.out + "/validation/step-4/00000.png"));

  // The documented equivalent: generate from the saved pipeline with the recorded seed.
  GenerateOptions g;
  g.model = b.out;
  g.prompt = kPrompt;
  g.num_images = 2;
  g.steps = 4;
  g.seed = validation_seed(o.seed);
  g.out_dir = tmp.str() + "/gen";
  g.progress = false;
  generate_images(g);
  for (const char* f : {"00000.png", "00001.png"})
    EXPECT_TRUE(slurp(g.out_dir + "/" + f) == slurp(b.out + "/validation/step-4/" + f))
        << f << ": generate from the saved pipeline differs from the last validation image";

  // Same step, same images across runs.
  TrainOptions c = b;
  c.out = tmp.str() + "/val2";
  c.max_steps = 2;
  run_train(c);
  for (const char* f : {"00000.png", "00001.png"})
    EXPECT_TRUE(slurp(c.out + "/validation/step-2/" + f) == slurp(b.out + "/validation/step-2/" + f)) << f;
}

TEST(TrainValidation, SeedIsDerivedNotTheTrainingSeed) {
  EXPECT_NE(validation_seed(0), 0u);
  EXPECT_NE(validation_seed(42), 42u);
  EXPECT_EQ(validation_seed(42), validation_seed(42));
  EXPECT_NE(validation_seed(42), validation_seed(43));
}

TEST(TrainValidation, EveryMustBePositiveWithAPrompt) {
  const db::test::TempDir tmp("train_val_bad");
  TrainOptions o = base_options(tmp.str());
  o.out = tmp.str() + "/out";
  o.validation_prompt = kPrompt;
  o.validation_every = 0;
  try {
    run_train(o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--validation-every must be >= 1"), std::string::npos) << e.what();
  }
}
