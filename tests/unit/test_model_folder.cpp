#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/random_model.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/init_weights.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/pipelines/compare.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;
using db::test::TempDir;

namespace {

UNetConfig tiny_unet() {
  return parse_unet_config(preset("sd1-tiny")["unet"], "sd1-tiny");
}
ClipTextConfig tiny_te() {
  return parse_clip_text_config(preset("sd1-tiny")["text_encoder"], "sd1-tiny");
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The registry's tensors in PyTorch layout as a tensor list (what a Python writer would produce).
std::vector<std::pair<std::string, Tensor>> torch_tensors(const ParamRegistry& reg, const Tensor& flat) {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& p : reg.params()) {
    Tensor t = Tensor::empty(p.torch_shape);
    if (p.is_conv())
      conv_weight_ours_to_torch(flat.f32() + p.offset, t.f32(), p.torch_shape);
    else
      std::memcpy(t.f32(), flat.f32() + p.offset, size_t(p.numel) * 4);
    out.emplace_back(p.name, t);
  }
  return out;
}

}  // namespace

TEST(ModelFolder, RoundTripIsBitExact) {
  TempDir dir("roundtrip");
  ParamRegistry reg = build_unet_registry(tiny_unet());
  Tensor flat = init_weights(reg, 1234);
  save_component(dir.path.string(), Component::UNet, tiny_unet().to_json(), reg, flat, DType::F32);
  EXPECT_TRUE(fs::exists(dir.path / "unet" / "config.json"));
  Tensor back = load_weights((dir.path / "unet" / "diffusion_pytorch_model.safetensors").string(), reg);
  ASSERT_EQ(back.numel(), flat.numel());
  EXPECT_EQ(std::memcmp(back.raw(), flat.raw(), flat.nbytes()), 0);

  // bf16 / f16: loading gives the rounded values exactly; saving again is idempotent.
  for (DType dt : {DType::BF16, DType::F16}) {
    save_component(dir.path.string(), Component::UNet, tiny_unet().to_json(), reg, flat, dt);
    Tensor h = load_weights((dir.path / "unet" / "diffusion_pytorch_model.safetensors").string(), reg);
    for (int64_t i = 0; i < flat.numel(); i += 97) {
      float v = flat.f32()[i];
      float want = dt == DType::BF16 ? bf16_to_f32(f32_to_bf16(v)) : f16_to_f32(f32_to_f16(v));
      ASSERT_EQ(h.f32()[i], want) << i;
    }
    auto f = SafetensorsFile::open((dir.path / "unet" / "diffusion_pytorch_model.safetensors").string());
    EXPECT_EQ(f.find("conv_in.weight")->dtype, dt);
  }
  // No temporaries left behind.
  for (const auto& e : fs::directory_iterator(dir.path)) EXPECT_EQ(e.path().filename(), "unet");
}

TEST(ModelFolder, InitIsDeterministicAndDrawsInTorchOrder) {
  ParamRegistry reg = build_unet_registry(tiny_unet());
  Tensor a = init_weights(reg, 7), b = init_weights(reg, 7), c = init_weights(reg, 8);
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0);
  EXPECT_NE(std::memcmp(a.raw(), c.raw(), a.nbytes()), 0);
  // conv_in.weight is parameter 0: torch-order element k is normal(k) * std.
  const ParamInfo& conv = reg.params()[0];
  ASSERT_EQ(conv.name, "conv_in.weight");
  std::vector<float> torch(size_t(conv.numel));
  conv_weight_ours_to_torch(a.f32() + conv.offset, torch.data(), conv.torch_shape);
  PhiloxStream s(7, RngPurpose::Init, 0, 0);
  const float sd = init_std(conv);
  EXPECT_NEAR(sd, 1.0 / std::sqrt(3.0 * 4 * 9), 1e-7);
  for (int64_t k = 0; k < conv.numel; ++k) ASSERT_EQ(torch[size_t(k)], s.normal(uint64_t(k)) * sd) << k;
  EXPECT_EQ(a.f32()[reg.at("conv_in.bias").offset], 0.f);
  EXPECT_EQ(a.f32()[reg.at("conv_norm_out.weight").offset], 1.f);
  EXPECT_EQ(a.f32()[reg.at("conv_norm_out.bias").offset], 0.f);
  ParamRegistry te = build_clip_text_registry(tiny_te());
  EXPECT_EQ(init_std(te.at("text_model.embeddings.token_embedding.weight")), 0.02f);
  // Statistics of a large tensor.
  Tensor t = init_weights(te, 3);
  const ParamInfo& emb = te.at("text_model.embeddings.token_embedding.weight");
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < emb.numel; ++i) {
    double v = t.f32()[emb.offset + i];
    sum += v, sq += v * v;
  }
  EXPECT_NEAR(sum / double(emb.numel), 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(sq / double(emb.numel)), 0.02, 0.001);
}

TEST(ModelFolder, ReportsEveryBadTensorAtOnce) {
  TempDir dir("bad");
  ParamRegistry reg = build_unet_registry(tiny_unet());
  auto tensors = torch_tensors(reg, init_weights(reg, 1));
  std::vector<std::pair<std::string, Tensor>> bad;
  for (auto& [n, t] : tensors) {
    if (n == "conv_in.weight" || n == "mid_block.resnets.1.conv2.bias") continue;  // missing
    if (n == "conv_out.bias") t = Tensor::zeros({3});                              // mis-shaped
    if (n == "time_embedding.linear_1.weight") t = Tensor::zeros({16, 64});        // mis-shaped (transposed)
    bad.emplace_back(n, t);
  }
  bad.emplace_back("extra.weight", Tensor::zeros({2, 2}));  // unexpected
  const std::string path = (dir.path / "w.safetensors").string();
  write_safetensors(path, bad);
  std::string m = error_of([&] { load_weights(path, reg); });
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.rfind(path + ": 2 missing, 1 unexpected, 2 mis-shaped tensors:", 0), 0u) << m;
  EXPECT_NE(m.find("missing conv_in.weight [16, 4, 3, 3]"), std::string::npos) << m;
  EXPECT_NE(m.find("missing mid_block.resnets.1.conv2.bias [32]"), std::string::npos) << m;
  EXPECT_NE(m.find("unexpected extra.weight F32[2, 2]"), std::string::npos) << m;
  EXPECT_NE(m.find("mis-shaped conv_out.bias: expected [4], found [3]"), std::string::npos) << m;
  EXPECT_NE(m.find("mis-shaped time_embedding.linear_1.weight: expected [64, 16], found [16, 64]"),
            std::string::npos)
      << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << "one line";
  EXPECT_NE(error_of([&] { check_weights(path, reg); }), "");
}

TEST(ModelFolder, TextEncoderNamesWithOrWithoutPrefixAndPositionIds) {
  TempDir dir("te");
  ParamRegistry reg = build_clip_text_registry(tiny_te());
  Tensor flat = init_weights(reg, 5);
  auto tensors = torch_tensors(reg, flat);
  // transformers >= 5 writes names without "text_model."; old checkpoints carry position_ids.
  for (auto& [n, t] : tensors) n = n.substr(std::strlen("text_model."));
  Tensor ids = Tensor::empty({1, 77}, DType::I64);
  for (int i = 0; i < 77; ++i) ids.data<int64_t>()[i] = i;
  tensors.emplace_back("embeddings.position_ids", ids);
  const std::string path = (dir.path / "model.safetensors").string();
  write_safetensors(path, tensors);
  Tensor back = load_weights(path, reg);
  EXPECT_EQ(std::memcmp(back.raw(), flat.raw(), flat.nbytes()), 0);
  tensors.back().first = "text_model.embeddings.position_ids";
  write_safetensors(path, tensors);
  EXPECT_NO_THROW(load_weights(path, reg));
}

TEST(ModelFolder, F16FileAndShardedIndexLoad) {
  TempDir dir("shard");
  ParamRegistry reg = build_unet_registry(tiny_unet());
  Tensor flat = init_weights(reg, 9);
  auto tensors = torch_tensors(reg, flat);
  // Two shards plus an index, as diffusers writes for big models.
  const size_t half = tensors.size() / 2;
  std::vector<std::pair<std::string, Tensor>> a(tensors.begin(), tensors.begin() + long(half)),
      b(tensors.begin() + long(half), tensors.end());
  const fs::path unet = dir.path / "unet";
  fs::create_directories(unet);
  write_safetensors((unet / "diffusion_pytorch_model-00001-of-00002.safetensors").string(), a);
  write_safetensors((unet / "diffusion_pytorch_model-00002-of-00002.safetensors").string(), b);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [n, t] : a) index["weight_map"][n] = "diffusion_pytorch_model-00001-of-00002.safetensors";
  for (const auto& [n, t] : b) index["weight_map"][n] = "diffusion_pytorch_model-00002-of-00002.safetensors";
  write_json_file((unet / "diffusion_pytorch_model.safetensors.index.json").string(), index);
  WeightFiles w = find_weight_files(unet.string(), Component::UNet);
  EXPECT_TRUE(w.sharded);
  EXPECT_EQ(w.files.size(), 2u);
  Tensor back = load_weights(w.path, reg);
  EXPECT_EQ(std::memcmp(back.raw(), flat.raw(), flat.nbytes()), 0);

  // Only an .fp16 variant present: it is used.
  fs::remove_all(unet);
  fs::create_directories(unet);
  save_weights((unet / "diffusion_pytorch_model.fp16.safetensors").string(), reg, flat, DType::F16);
  w = find_weight_files(unet.string(), Component::UNet);
  EXPECT_EQ(fs::path(w.path).filename(), "diffusion_pytorch_model.fp16.safetensors");
  EXPECT_NO_THROW(load_weights(w.path, reg));
}

TEST(ModelFolder, PickleOnlyFolderSaysConvert) {
  TempDir dir("pickle");
  const fs::path unet = dir.path / "unet";
  fs::create_directories(unet);
  std::ofstream(unet / "diffusion_pytorch_model.bin") << "PK";
  std::string m = error_of([&] { find_weight_files(unet.string(), Component::UNet); });
  EXPECT_NE(m.find(unet.string()), std::string::npos) << m;
  EXPECT_NE(m.find("only safetensors weights are supported"), std::string::npos) << m;
  EXPECT_NE(m.find("diffusion_pytorch_model.bin"), std::string::npos) << m;
  EXPECT_NE(m.find("safe_serialization=True"), std::string::npos) << m;
  fs::remove(unet / "diffusion_pytorch_model.bin");
  m = error_of([&] { find_weight_files(unet.string(), Component::UNet); });
  EXPECT_NE(m.find("no weights file"), std::string::npos) << m;
}

// A NaN or infinity in the weights fails the load generate, prepare and train use, naming the file and
// the tensor (issue 16 item 7: a black image with exit 0 before).
TEST(ModelFolder, NonFiniteWeightsFailNamingTheTensor) {
  TempDir dir("nan");
  RandomModelOptions o;
  o.preset = "sd1-tiny";
  o.dir = (dir.path / "model").string();
  write_random_model(o);
  ModelFolder m = ModelFolder::open(o.dir);
  ParamRegistry reg = m.registry(Component::UNet);
  Tensor w = m.load(Component::UNet, reg);
  const ParamInfo& p = reg.params().at(reg.params().size() / 2);
  w.f32()[p.offset + 1] = std::numeric_limits<float>::quiet_NaN();
  w.f32()[p.offset + 2] = std::numeric_limits<float>::infinity();
  const std::string file = m.weight_files(Component::UNet).path;
  save_weights(file, reg, w, DType::F32);
  const std::string err = error_of([&] { m.load(Component::UNet, reg); });
  EXPECT_NE(err.find(file + ": tensor " + p.name + " holds 2 non-finite value(s)"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  EXPECT_NO_THROW(load_weights(file, reg));  // the raw reader (compare, inspect) still reads them
}

TEST(ModelFolder, RandomModelOpensAndLoads) {
  TempDir dir("random");
  RandomModelOptions o;
  o.preset = "sd2-tiny";
  o.dir = (dir.path / "model").string();
  o.seed = 3;
  o.dtype = DType::BF16;
  write_random_model(o);
  ModelFolder m = ModelFolder::open(o.dir);
  EXPECT_TRUE(m.has_tokenizer);
  EXPECT_EQ(m.scheduler.prediction_type, "v_prediction");
  EXPECT_EQ(m.model_index["_class_name"], "StableDiffusionPipeline");
  for (Component c : all_components()) {
    ParamRegistry reg = m.registry(c);
    Tensor w = m.load(c, reg);
    EXPECT_EQ(w.numel(), reg.total_numel());
    EXPECT_EQ(m.config_json(c), preset("sd2-tiny")[component_name(c)]);
  }
  // The same seed gives the same weights (as stored, bf16-rounded).
  ParamRegistry ureg = m.registry(Component::UNet);
  Tensor u = m.load(Component::UNet, ureg);
  Tensor ref = init_weights(ureg, 3, 0);
  for (int64_t i = 0; i < ref.numel(); i += 31) ASSERT_EQ(u.f32()[i], bf16_to_f32(f32_to_bf16(ref.f32()[i])));

  // A non-empty folder is refused without overwrite, replaced with it.
  std::string err = error_of([&] { write_random_model(o); });
  EXPECT_NE(err.find("not empty"), std::string::npos) << err;
  o.overwrite = true;
  o.preset = "sd1-tiny";
  write_random_model(o);
  EXPECT_EQ(ModelFolder::open(o.dir).scheduler.prediction_type, "epsilon");
  for (const auto& e : fs::directory_iterator(dir.path)) EXPECT_EQ(e.path().filename(), "model");
}

TEST(ModelFolder, MissingConfigNamesFile) {
  TempDir dir("cfg");
  RandomModelOptions o;
  o.preset = "sd1-tiny";
  o.dir = (dir.path / "m").string();
  write_random_model(o);
  fs::remove(dir.path / "m" / "vae" / "config.json");
  std::string m = error_of([&] { ModelFolder::open(o.dir); });
  EXPECT_NE(m.find("vae/config.json"), std::string::npos) << m;
  std::ofstream(dir.path / "m" / "vae" / "config.json")
      << "{\"block_out_channels\": [8, 16], \"act_fn\": \"relu\"}";
  m = error_of([&] { ModelFolder::open(o.dir); });
  EXPECT_NE(m.find("vae/config.json: field 'down_block_types'"), std::string::npos) << m;
}

// Folders written by diffusers (tests/reference): the sd1-tiny and sd2-tiny golden models.
TEST(ModelFolder, LoadsGoldenDiffusersFolder) {
  const std::map<std::string, int64_t> counts = {{"unet", 283284}, {"text_encoder", 48106}, {"vae", 43711}};
  for (const char* name : {"sd1-tiny", "sd2-tiny"}) {
    const fs::path dir = db::test::golden_model(name);
    SCOPED_TRACE(dir.string());
    ModelFolder m = ModelFolder::open(dir.string());
    for (Component c : all_components()) {
      ParamRegistry reg = m.registry(c);
      Tensor w = m.load(c, reg);
      EXPECT_EQ(reg.param_count(), counts.at(component_name(c)));
    }
    // Loaded values equal the file's, conv weights moved from [O, I, kh, kw] to [O, kh, kw, I].
    ParamRegistry ureg = m.registry(Component::UNet);
    Tensor u = m.load(Component::UNet, ureg);
    auto file = SafetensorsFile::open(m.weight_files(Component::UNet).files.at(0));
    for (const char* n :
         {"conv_in.weight", "down_blocks.0.attentions.0.proj_in.weight", "time_embedding.linear_1.weight"}) {
      const ParamInfo& p = ureg.at(n);
      std::vector<float> raw(size_t(p.numel)), ours(size_t(p.numel));
      file.read_f32(*file.find(n), raw.data());
      if (p.is_conv())
        conv_weight_ours_to_torch(u.f32() + p.offset, ours.data(), p.torch_shape);
      else
        std::memcpy(ours.data(), u.f32() + p.offset, raw.size() * 4);
      EXPECT_EQ(ours, raw) << n;
    }
    const Shape& s = ureg.at("conv_in.weight").torch_shape;  // [16, 4, 3, 3]
    std::vector<float> raw(size_t(shape_numel(s)));
    file.read_f32(*file.find("conv_in.weight"), raw.data());
    // element [o=5, i=2, y=1, x=0] of the file is ours [5, 1, 0, 2]
    EXPECT_EQ(u.f32()[ureg.at("conv_in.weight").offset + ((5 * 3 + 1) * 3 + 0) * 4 + 2],
              raw[((5 * 4 + 2) * 3 + 1) * 3 + 0]);
  }
}

// A folder written by diffusers (the harness's golden model) loads in C++ and saves back with every
// tensor bit-identical: same names, shapes and values (conv weights permuted there and back).
TEST(ModelFolder, DiffusersFolderSavesBackBitIdentical) {
  for (const char* name : {"sd1-tiny", "sd2-tiny"}) {
    const fs::path src = db::test::golden_model(name);
    SCOPED_TRACE(src.string());
    TempDir out(std::string("saveback_") + name);
    ModelFolder m = ModelFolder::open(src.string());
    for (Component c : all_components()) {
      ParamRegistry reg = m.registry(c);
      Tensor w = m.load(c, reg);
      save_component(out.path.string(), c, m.config_json(c), reg, w, DType::F32);
    }
    CompareResult r = compare_models(src.string(), out.path.string());
    EXPECT_TRUE(r.only_in_a.empty()) << r.only_in_a.size() << " tensors not saved back, e.g. "
                                     << r.only_in_a[0];
    EXPECT_TRUE(r.only_in_b.empty());
    EXPECT_TRUE(r.shape_mismatch.empty());
    EXPECT_EQ(r.diffs.size(), 464u);  // 304 UNet + 36 text encoder + 124 VAE tensors
    for (const auto& d : r.diffs) EXPECT_EQ(d.max_abs, 0.0) << d.name;
  }
}
