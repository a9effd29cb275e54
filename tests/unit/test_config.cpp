#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "dreambooth/core/error.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/presets.h"

using namespace db;
using nlohmann::json;

namespace {

// Expects parse to throw an Error whose message contains every fragment.
template <typename F>
void expect_error(F&& parse, std::initializer_list<std::string> fragments) {
  try {
    parse();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    for (const auto& f : fragments) EXPECT_NE(m.find(f), std::string::npos) << "'" << f << "' not in: " << m;
  }
}

json unet_json() {
  return preset("sd1-tiny")["unet"];
}

void expect_unet_error(const char* field, const json& value, std::initializer_list<std::string> fragments) {
  json j = unet_json();
  j[field] = value;
  expect_error([&] { parse_unet_config(j, "m/unet/config.json"); }, fragments);
}

}  // namespace

TEST(Config, PresetsParse) {
  for (const auto& name : preset_names()) {
    json p = preset(name);
    UNetConfig u = parse_unet_config(p["unet"], name);
    ClipTextConfig t = parse_clip_text_config(p["text_encoder"], name);
    VaeConfig v = parse_vae_config(p["vae"], name);
    SchedulerConfig s = parse_scheduler_config(p["scheduler"], name);
    EXPECT_EQ(u.raw, p["unet"]);
    EXPECT_EQ(u.to_json(), p["unet"]);  // saving writes back what was read
    EXPECT_EQ(t.to_json(), p["text_encoder"]);
    EXPECT_EQ(v.to_json(), p["vae"]);
    EXPECT_EQ(s.to_json(), p["scheduler"]);
    EXPECT_EQ(u.num_heads.size(), u.block_out_channels.size());
  }
  json p = preset("sd15");
  UNetConfig u = parse_unet_config(p["unet"], "sd15");
  EXPECT_EQ(u.num_heads, (std::vector<int>{8, 8, 8, 8}));  // int -> per block
  EXPECT_EQ(u.time_embedding_dim(), 1280);
  EXPECT_FALSE(u.use_linear_projection);
  ClipTextConfig t = parse_clip_text_config(p["text_encoder"], "sd15");
  EXPECT_EQ(t.hidden_act, "quick_gelu");
  EXPECT_EQ(parse_vae_config(p["vae"], "sd15").downscale_factor(), 8);
  UNetConfig u21 = parse_unet_config(preset("sd21")["unet"], "sd21");
  EXPECT_EQ(u21.num_heads, (std::vector<int>{5, 10, 20, 20}));  // list as given
  EXPECT_TRUE(u21.use_linear_projection);
  EXPECT_TRUE(u21.upcast_attention);
  EXPECT_EQ(u21.cross_attention_dim, 1024);
  SchedulerConfig s21 = parse_scheduler_config(preset("sd21")["scheduler"], "sd21");
  EXPECT_EQ(s21.prediction_type, "v_prediction");
  EXPECT_EQ(s21.class_name, "DDIMScheduler");
  EXPECT_EQ(s21.steps_offset, 1);
}

TEST(Config, AttentionHeadDimIntOrList) {
  json j = unet_json();
  j["attention_head_dim"] = 4;
  EXPECT_EQ(parse_unet_config(j, "f").num_heads, (std::vector<int>{4, 4}));
  j["attention_head_dim"] = {2, 8};
  EXPECT_EQ(parse_unet_config(j, "f").num_heads, (std::vector<int>{2, 8}));
  j["num_attention_heads"] = {4, 4};  // the explicit field wins
  UNetConfig c = parse_unet_config(j, "f");
  EXPECT_EQ(c.num_heads, (std::vector<int>{4, 4}));
  ASSERT_TRUE(c.num_attention_heads.has_value());
  j["num_attention_heads"] = nullptr;
  EXPECT_EQ(parse_unet_config(j, "f").num_heads, (std::vector<int>{2, 8}));
  expect_unet_error("attention_head_dim", {2, 2, 2},
                    {"m/unet/config.json", "'attention_head_dim'", "3 entries"});
  expect_unet_error("attention_head_dim", "8", {"'attention_head_dim'", "\"8\""});
  expect_unet_error("attention_head_dim", 3, {"'attention_head_dim'", "unsupported value 3"});  // 16 % 3
}

TEST(Config, UnsupportedUNetValuesNameFileFieldAndValue) {
  const std::string f = "m/unet/config.json";
  expect_unet_error("down_block_types", {"CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D"},
                    {f, "field 'down_block_types'", "unsupported value \"SimpleCrossAttnDownBlock2D\"",
                     "supported: CrossAttnDownBlock2D, DownBlock2D"});
  expect_unet_error("up_block_types", {"UpBlock2D", "AttnUpBlock2D"},
                    {f, "'up_block_types'", "\"AttnUpBlock2D\"", "CrossAttnUpBlock2D, UpBlock2D"});
  expect_unet_error("act_fn", "gelu", {f, "'act_fn'", "unsupported value \"gelu\"", "supported: silu"});
  expect_unet_error("resnet_time_scale_shift", "scale_shift",
                    {f, "'resnet_time_scale_shift'", "\"scale_shift\""});
  expect_unet_error("time_embedding_type", "fourier",
                    {f, "'time_embedding_type'", "\"fourier\"", "positional"});
  expect_unet_error("class_embed_type", "timestep", {f, "'class_embed_type'", "\"timestep\""});
  expect_unet_error("addition_embed_type", "text_time", {f, "'addition_embed_type'", "\"text_time\""});
  expect_unet_error("dual_cross_attention", true, {f, "'dual_cross_attention'", "unsupported value true"});
  expect_unet_error("mid_block_type", "UNetMidBlock2DSimpleCrossAttn", {f, "'mid_block_type'"});
  expect_unet_error("block_out_channels", {16, 32, 32}, {f, "'down_block_types'", "2 entries", "has 3"});
  expect_unet_error("norm_num_groups", 5, {f, "'norm_num_groups'", "unsupported value 5"});
  expect_unet_error("in_channels", "four", {f, "'in_channels'", "expected an integer", "\"four\""});
  expect_unet_error("transformer_layers_per_block", {1, 2}, {f, "'transformer_layers_per_block'"});
  // Unknown extra fields are ignored but kept.
  json j = unet_json();
  j["_diffusers_version"] = "0.42.1";
  j["some_future_field"] = {1, 2, 3};
  UNetConfig c = parse_unet_config(j, f);
  EXPECT_EQ(c.to_json()["some_future_field"], j["some_future_field"]);
  // null class_embed_type etc. is what diffusers writes by default.
  j["class_embed_type"] = nullptr;
  j["addition_embed_type"] = nullptr;
  EXPECT_NO_THROW(parse_unet_config(j, f));
}

TEST(Config, UnsupportedOtherValues) {
  json t = preset("sd1-tiny")["text_encoder"];
  t["hidden_act"] = "relu";
  expect_error([&] { parse_clip_text_config(t, "te/config.json"); },
               {"te/config.json", "'hidden_act'", "\"relu\"", "quick_gelu, gelu"});
  t["hidden_act"] = "gelu";
  EXPECT_EQ(parse_clip_text_config(t, "te").hidden_act, "gelu");

  json v = preset("sd1-tiny")["vae"];
  v["down_block_types"] = {"DownEncoderBlock2D", "AttnDownEncoderBlock2D"};
  expect_error([&] { parse_vae_config(v, "vae/config.json"); },
               {"vae/config.json", "'down_block_types'", "\"AttnDownEncoderBlock2D\""});
  v = preset("sd1-tiny")["vae"];
  v["norm_num_groups"] = 3;
  expect_error([&] { parse_vae_config(v, "vae/config.json"); }, {"'norm_num_groups'", "unsupported value 3"});
  v = preset("sd1-tiny")["vae"];
  v["up_block_types"] = {"UpDecoderBlock2D"};
  expect_error([&] { parse_vae_config(v, "vae/config.json"); }, {"'up_block_types'", "1 entries"});

  json s = preset("sd1-tiny")["scheduler"];
  const char* file = "scheduler/scheduler_config.json";
  for (auto [field, value, supported] :
       {std::tuple{"beta_schedule", "cosine", "scaled_linear, linear, squaredcos_cap_v2"},
        {"prediction_type", "sample", "epsilon, v_prediction"},
        {"timestep_spacing", "middle", "leading, trailing, linspace"}}) {
    json bad = s;
    bad[field] = value;
    expect_error([&] { parse_scheduler_config(bad, file); },
                 {file, std::string("field '") + field + "'", std::string("\"") + value + "\"", supported});
  }
}

TEST(Config, ReadJsonFileNamesFileAndLine) {
  auto dir = std::filesystem::temp_directory_path() / ("db_config_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto path = (dir / "config.json").string();
  std::ofstream(path) << "{\n  \"a\": 1,\n  \"b\": ]\n}\n";
  expect_error([&] { read_json_file(path); }, {path, ":3:"});
  expect_error([&] { read_json_file((dir / "absent.json").string()); }, {"absent.json", "cannot open"});
  std::ofstream(path) << "{\"a\": [1, 2]}";
  EXPECT_EQ(read_json_file(path)["a"][1], 2);
  std::filesystem::remove_all(dir);
}
