#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/models/registry.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

fs::path fixture_dir() {
  return fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "registry";
}

ParamRegistry build(const std::string& preset_name, const std::string& comp) {
  nlohmann::json p = preset(preset_name);
  if (comp == "unet") return build_unet_registry(parse_unet_config(p["unet"], preset_name + ":unet"));
  if (comp == "vae") return build_vae_registry(parse_vae_config(p["vae"], preset_name + ":vae"));
  return build_clip_text_registry(parse_clip_text_config(p["text_encoder"], preset_name + ":text_encoder"));
}

// Compares with the names/shapes diffusers/transformers produced (tests/reference/check_registry.py).
// transformers >= 5 drops CLIPTextModel's "text_model." prefix in state_dict(); files use either.
void expect_matches_reference(const std::string& preset_name, const std::string& comp) {
  SCOPED_TRACE(preset_name + " " + comp);
  nlohmann::json ref = read_json_file((fixture_dir() / (preset_name + "-" + comp + ".json")).string());
  ParamRegistry r = build(preset_name, comp);
  std::vector<std::pair<std::string, Shape>> want;
  for (const auto& e : ref["params"]) {
    std::string name = e[0].get<std::string>();
    if (comp == "text_encoder" && name.rfind("text_model.", 0) != 0) name = "text_model." + name;
    if (name.find("position_ids") != std::string::npos) continue;
    want.emplace_back(name, e[1].get<Shape>());
  }
  std::vector<std::pair<std::string, Shape>> got;
  for (const auto& p : r.params()) got.emplace_back(p.name, p.torch_shape);
  EXPECT_EQ(got.size(), want.size());
  std::map<std::string, Shape> got_map(got.begin(), got.end()), want_map(want.begin(), want.end());
  for (const auto& [n, s] : want_map) {
    auto it = got_map.find(n);
    if (it == got_map.end())
      ADD_FAILURE() << "missing " << n << " " << shape_str(s);
    else if (it->second != s)
      ADD_FAILURE() << n << ": ours " << shape_str(it->second) << " reference " << shape_str(s);
  }
  for (const auto& [n, s] : got_map)
    if (!want_map.count(n)) ADD_FAILURE() << "unexpected " << n << " " << shape_str(s);
  EXPECT_TRUE(got == want) << "same names and shapes, but not in diffusers' state_dict order";
  EXPECT_EQ(r.param_count(), ref["count"].get<int64_t>());
}

}  // namespace

TEST(Registry, MatchesDiffusersTiny) {
  for (const char* p : {"sd1-tiny", "sd2-tiny"})
    for (const char* c : {"unet", "text_encoder", "vae"}) expect_matches_reference(p, c);
}

TEST(Registry, MatchesDiffusersFullSize) {
  for (const char* p : {"sd15", "sd21"})
    for (const char* c : {"unet", "text_encoder", "vae"}) expect_matches_reference(p, c);
}

TEST(Registry, Sd15ParameterCounts) {
  EXPECT_EQ(build("sd15", "unet").param_count(), 859520964);
  EXPECT_EQ(build("sd15", "text_encoder").param_count(), 123060480);
  EXPECT_EQ(build("sd15", "vae").param_count(), 83653863);
}

TEST(Registry, Sd21ParameterCounts) {
  // Measured with diffusers 0.42.1 / transformers 5.23.0 (tests/reference/check_registry.py).
  EXPECT_EQ(build("sd21", "unet").param_count(), 865910724);
  EXPECT_EQ(build("sd21", "text_encoder").param_count(), 340387840);
  EXPECT_EQ(build("sd21", "vae").param_count(), 83653863);
}

TEST(Registry, ConvWeightsArePermutedAndAligned) {
  ParamRegistry r;
  r.add("conv.weight", {8, 3, 3, 3});
  r.add("conv.bias", {8});
  r.add("lin.weight", {5, 7});
  const ParamInfo& c = r.at("conv.weight");
  EXPECT_TRUE(c.is_conv());
  EXPECT_EQ(c.shape, (Shape{8, 3, 3, 3}));
  EXPECT_EQ(r.at("lin.weight").shape, (Shape{5, 7}));
  EXPECT_EQ(r.at("conv.bias").offset, 224);  // 216 rounded up to 16
  EXPECT_EQ(r.at("lin.weight").offset, 240);
  EXPECT_EQ(r.param_count(), 216 + 8 + 35);
  EXPECT_EQ(r.total_numel(), 240 + 48);
  EXPECT_EQ(r.find("nope"), nullptr);
  EXPECT_THROW(r.at("nope"), Error);
  EXPECT_THROW(r.add("lin.weight", {1}), Error);

  Tensor flat = Tensor::zeros({r.total_numel()});
  Tensor v = r.view(flat, "lin.weight");
  EXPECT_EQ(v.shape(), (Shape{5, 7}));
  v.f32()[0] = 3.f;
  EXPECT_EQ(flat.f32()[240], 3.f);
}

TEST(Registry, ConvPermutationRoundTrips) {
  const Shape s = {4, 3, 2, 5};  // [O, I, kh, kw]
  std::vector<float> torch(size_t(shape_numel(s))), ours(torch.size()), back(torch.size());
  for (size_t i = 0; i < torch.size(); ++i) torch[i] = float(i);
  conv_weight_torch_to_ours(torch.data(), ours.data(), s);
  // ours[o][y][x][i] == torch[o][i][y][x]
  auto t_at = [&](int o, int i, int y, int x) { return torch[size_t(((o * 3 + i) * 2 + y) * 5 + x)]; };
  auto o_at = [&](int o, int y, int x, int i) { return ours[size_t(((o * 2 + y) * 5 + x) * 3 + i)]; };
  EXPECT_EQ(o_at(2, 1, 3, 1), t_at(2, 1, 1, 3));
  EXPECT_EQ(o_at(3, 0, 4, 2), t_at(3, 2, 0, 4));
  conv_weight_ours_to_torch(ours.data(), back.data(), s);
  EXPECT_EQ(back, torch);
}

TEST(Registry, PresetsAreEmbedded) {
  EXPECT_EQ(preset_names(), (std::vector<std::string>{"sd1-tiny", "sd2-tiny", "sd15", "sd21"}));
  for (const auto& n : preset_names()) {
    nlohmann::json p = preset(n);
    for (const char* k :
         {"description", "model_index", "unet", "text_encoder", "vae", "scheduler", "tokenizer"})
      EXPECT_TRUE(p.contains(k)) << n << " " << k;
  }
  try {
    preset_json("sdxl");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sd1-tiny"), std::string::npos) << e.what();
  }
}
