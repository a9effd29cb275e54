#include "dreambooth/models/config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dreambooth/core/error.h"

namespace db {
namespace {

using nlohmann::json;

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

[[noreturn]] void unsupported(const std::string& file, const std::string& field, const json& value,
                              const std::string& supported) {
  throw Error(file, ": field '", field, "': unsupported value ", value.dump(), " (supported: ", supported,
              ")");
}

[[noreturn]] void bad_type(const std::string& file, const std::string& field, const json& value,
                           const char* expected) {
  throw Error(file, ": field '", field, "': expected ", expected, ", got ", value.dump());
}

// A field that is absent or null.
bool absent(const json& j, const char* key) {
  return !j.contains(key) || j.at(key).is_null();
}

int get_int(const json& j, const char* key, const std::string& file, int def) {
  if (absent(j, key)) return def;
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int>();
  if (v.is_number_float() && double(int64_t(v.get<double>())) == v.get<double>()) return int(v.get<double>());
  bad_type(file, key, v, "an integer");
}

float get_float(const json& j, const char* key, const std::string& file, float def) {
  if (absent(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_number()) bad_type(file, key, v, "a number");
  return v.get<float>();
}

bool get_bool(const json& j, const char* key, const std::string& file, bool def) {
  if (absent(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_boolean()) bad_type(file, key, v, "true or false");
  return v.get<bool>();
}

std::string get_str(const json& j, const char* key, const std::string& file, const std::string& def) {
  if (absent(j, key)) return def;
  const json& v = j.at(key);
  if (!v.is_string()) bad_type(file, key, v, "a string");
  return v.get<std::string>();
}

std::vector<int> get_int_list(const json& j, const char* key, const std::string& file) {
  if (absent(j, key)) throw Error(file, ": field '", key, "' is required");
  const json& v = j.at(key);
  if (!v.is_array() || v.empty()) bad_type(file, key, v, "a non-empty list of integers");
  std::vector<int> out;
  for (const json& e : v) {
    if (!e.is_number_integer()) bad_type(file, key, v, "a list of integers");
    out.push_back(e.get<int>());
  }
  return out;
}

std::vector<std::string> get_str_list(const json& j, const char* key, const std::string& file,
                                      const std::vector<std::string>& allowed) {
  if (absent(j, key)) throw Error(file, ": field '", key, "' is required");
  const json& v = j.at(key);
  if (!v.is_array() || v.empty()) bad_type(file, key, v, "a non-empty list of strings");
  std::vector<std::string> out;
  for (const json& e : v) {
    if (!e.is_string()) bad_type(file, key, v, "a list of strings");
    std::string s = e.get<std::string>();
    bool ok = false;
    for (const auto& a : allowed) ok |= a == s;
    if (!ok) unsupported(file, key, e, join(allowed));
    out.push_back(s);
  }
  return out;
}

std::string get_choice(const json& j, const char* key, const std::string& file, const std::string& def,
                       const std::vector<std::string>& allowed) {
  std::string s = get_str(j, key, file, def);
  for (const auto& a : allowed)
    if (a == s) return s;
  unsupported(file, key, j.at(key), join(allowed));
}

// Fields that select architectures we do not implement (SDXL, class-conditioned, ...): must be null/absent.
void require_absent(const json& j, const char* key, const std::string& file, const char* what) {
  if (!absent(j, key)) unsupported(file, key, j.at(key), what);
}

void require_value(const json& j, const char* key, const std::string& file, const json& expected) {
  if (absent(j, key)) return;
  const json& v = j.at(key);
  bool same =
      v == expected || (v.is_number() && expected.is_number() && v.get<double>() == expected.get<double>());
  if (!same) unsupported(file, key, v, expected.dump());
}

void check_groups(const std::vector<int>& channels, int groups, const char* list_field,
                  const std::string& file) {
  if (groups <= 0) unsupported(file, "norm_num_groups", groups, "a positive integer");
  for (int c : channels) {
    if (c <= 0) throw Error(file, ": field '", list_field, "': channel count ", c, " must be positive");
    if (c % groups != 0)
      throw Error(file, ": field 'norm_num_groups': unsupported value ", groups,
                  " (must divide every entry of ", list_field, "; ", c, " is not a multiple)");
  }
}

void check_object(const json& j, const std::string& file) {
  if (!j.is_object()) throw Error(file, ": expected a JSON object, got ", j.type_name());
}

// attention_head_dim / num_attention_heads: an int (same for every block) or a per-down-block list.
std::vector<int> per_block_ints(const json& v, const char* key, size_t n, const std::string& file) {
  std::vector<int> out;
  if (v.is_number_integer()) {
    out.assign(n, v.get<int>());
  } else if (v.is_array()) {
    for (const json& e : v) {
      if (!e.is_number_integer()) bad_type(file, key, v, "an integer or a list of integers");
      out.push_back(e.get<int>());
    }
    if (out.size() != n)
      throw Error(file, ": field '", key, "': has ", out.size(), " entries but down_block_types has ", n);
  } else {
    bad_type(file, key, v, "an integer or a list of integers");
  }
  for (int h : out)
    if (h <= 0) unsupported(file, key, v, "positive integers");
  return out;
}

}  // namespace

json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path, ": cannot open (", std::strerror(errno), ")");
  std::stringstream ss;
  ss << f.rdbuf();
  std::string text = ss.str();
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // Convert the byte offset into line:column for the message.
    size_t pos = std::min<size_t>(e.byte ? e.byte - 1 : 0, text.size());
    int line = 1, col = 1;
    for (size_t i = 0; i < pos; ++i) {
      if (text[i] == '\n')
        ++line, col = 1;
      else
        ++col;
    }
    throw Error(path, ":", line, ":", col, ": invalid JSON (", e.what(), ")");
  }
}

UNetConfig parse_unet_config(const json& j, const std::string& file) {
  check_object(j, file);
  UNetConfig c;
  c.raw = j;
  if (!absent(j, "_class_name")) {
    std::string cls = get_str(j, "_class_name", file, "");
    if (cls != "UNet2DConditionModel")
      unsupported(file, "_class_name", j.at("_class_name"), "UNet2DConditionModel");
  }
  c.in_channels = get_int(j, "in_channels", file, 4);
  c.out_channels = get_int(j, "out_channels", file, 4);
  c.sample_size = get_int(j, "sample_size", file, 64);
  c.down_block_types = get_str_list(j, "down_block_types", file, {"CrossAttnDownBlock2D", "DownBlock2D"});
  c.up_block_types = get_str_list(j, "up_block_types", file, {"CrossAttnUpBlock2D", "UpBlock2D"});
  c.mid_block_type =
      get_choice(j, "mid_block_type", file, "UNetMidBlock2DCrossAttn", {"UNetMidBlock2DCrossAttn"});
  c.block_out_channels = get_int_list(j, "block_out_channels", file);
  const size_t n = c.block_out_channels.size();
  if (c.down_block_types.size() != n)
    throw Error(file, ": field 'down_block_types': has ", c.down_block_types.size(),
                " entries but block_out_channels has ", n);
  if (c.up_block_types.size() != n)
    throw Error(file, ": field 'up_block_types': has ", c.up_block_types.size(),
                " entries but block_out_channels has ", n);
  c.layers_per_block = get_int(j, "layers_per_block", file, 2);
  if (c.layers_per_block <= 0)
    unsupported(file, "layers_per_block", j.at("layers_per_block"), "a positive integer");
  if (!absent(j, "transformer_layers_per_block") && !j.at("transformer_layers_per_block").is_number_integer())
    unsupported(file, "transformer_layers_per_block", j.at("transformer_layers_per_block"), "an integer");
  c.transformer_layers_per_block = get_int(j, "transformer_layers_per_block", file, 1);
  if (c.transformer_layers_per_block <= 0)
    unsupported(file, "transformer_layers_per_block", j.at("transformer_layers_per_block"),
                "a positive integer");

  if (absent(j, "attention_head_dim"))
    c.num_heads.assign(n, 8);
  else
    c.num_heads = per_block_ints(j.at("attention_head_dim"), "attention_head_dim", n, file);
  if (!absent(j, "num_attention_heads")) {
    c.num_attention_heads = per_block_ints(j.at("num_attention_heads"), "num_attention_heads", n, file);
    c.num_heads = *c.num_attention_heads;
  }
  for (size_t i = 0; i < n; ++i)
    if (c.block_out_channels[i] % c.num_heads[i] != 0)
      throw Error(file, ": field 'attention_head_dim': unsupported value ", c.num_heads[i], " for block ", i,
                  " (the head count must divide block_out_channels[", i, "] = ", c.block_out_channels[i],
                  ")");

  if (!absent(j, "cross_attention_dim") && !j.at("cross_attention_dim").is_number_integer())
    unsupported(file, "cross_attention_dim", j.at("cross_attention_dim"), "an integer");
  c.cross_attention_dim = get_int(j, "cross_attention_dim", file, 1280);
  c.use_linear_projection = get_bool(j, "use_linear_projection", file, false);
  c.upcast_attention = get_bool(j, "upcast_attention", file, false);
  if (!absent(j, "only_cross_attention") && !j.at("only_cross_attention").is_boolean())
    unsupported(file, "only_cross_attention", j.at("only_cross_attention"), "true, false");
  c.only_cross_attention = get_bool(j, "only_cross_attention", file, false);
  c.dual_cross_attention = get_bool(j, "dual_cross_attention", file, false);
  if (c.dual_cross_attention) unsupported(file, "dual_cross_attention", true, "false");
  c.center_input_sample = get_bool(j, "center_input_sample", file, false);
  c.flip_sin_to_cos = get_bool(j, "flip_sin_to_cos", file, true);
  c.freq_shift = get_int(j, "freq_shift", file, 0);
  c.downsample_padding = get_int(j, "downsample_padding", file, 1);
  c.mid_block_scale_factor = get_float(j, "mid_block_scale_factor", file, 1.f);
  c.norm_eps = get_float(j, "norm_eps", file, 1e-5f);
  c.norm_num_groups = get_int(j, "norm_num_groups", file, 32);
  check_groups(c.block_out_channels, c.norm_num_groups, "block_out_channels", file);
  c.act_fn = get_choice(j, "act_fn", file, "silu", {"silu"});
  c.resnet_time_scale_shift = get_choice(j, "resnet_time_scale_shift", file, "default", {"default"});
  c.time_embedding_type = get_choice(j, "time_embedding_type", file, "positional", {"positional"});
  if (c.cross_attention_dim <= 0)
    unsupported(file, "cross_attention_dim", c.cross_attention_dim, "a positive integer");

  // SDXL / class-conditioned / other variants.
  require_absent(j, "class_embed_type", file, "null");
  require_absent(j, "num_class_embeds", file, "null");
  require_absent(j, "addition_embed_type", file, "null");
  require_absent(j, "addition_time_embed_dim", file, "null");
  require_absent(j, "projection_class_embeddings_input_dim", file, "null");
  require_absent(j, "encoder_hid_dim", file, "null");
  require_absent(j, "encoder_hid_dim_type", file, "null");
  require_absent(j, "time_embedding_dim", file, "null");
  require_absent(j, "time_embedding_act_fn", file, "null");
  require_absent(j, "timestep_post_act", file, "null");
  require_absent(j, "time_cond_proj_dim", file, "null");
  require_absent(j, "cross_attention_norm", file, "null");
  require_absent(j, "mid_block_only_cross_attention", file, "null");
  require_absent(j, "reverse_transformer_layers_per_block", file, "null");
  require_value(j, "conv_in_kernel", file, 3);
  require_value(j, "conv_out_kernel", file, 3);
  require_value(j, "attention_type", file, "default");
  require_value(j, "resnet_skip_time_act", file, false);
  require_value(j, "resnet_out_scale_factor", file, 1.0);
  require_value(j, "class_embeddings_concat", file, false);
  return c;
}

ClipTextConfig parse_clip_text_config(const json& j, const std::string& file) {
  check_object(j, file);
  ClipTextConfig c;
  c.raw = j;
  if (!absent(j, "model_type")) {
    std::string mt = get_str(j, "model_type", file, "");
    if (mt != "clip_text_model" && mt != "clip")
      unsupported(file, "model_type", j.at("model_type"), "clip_text_model");
  }
  c.vocab_size = get_int(j, "vocab_size", file, 49408);
  c.hidden_size = get_int(j, "hidden_size", file, 512);
  c.intermediate_size = get_int(j, "intermediate_size", file, 2048);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", file, 12);
  c.num_attention_heads = get_int(j, "num_attention_heads", file, 8);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", file, 77);
  c.projection_dim = get_int(j, "projection_dim", file, 512);
  c.hidden_act = get_choice(j, "hidden_act", file, "quick_gelu", {"quick_gelu", "gelu"});
  c.layer_norm_eps = get_float(j, "layer_norm_eps", file, 1e-5f);
  c.bos_token_id = get_int(j, "bos_token_id", file, 49406);
  c.eos_token_id = get_int(j, "eos_token_id", file, 49407);
  c.pad_token_id = get_int(j, "pad_token_id", file, 1);
  for (auto [key, v] : {std::pair{"vocab_size", c.vocab_size},
                        {"hidden_size", c.hidden_size},
                        {"intermediate_size", c.intermediate_size},
                        {"num_hidden_layers", c.num_hidden_layers},
                        {"num_attention_heads", c.num_attention_heads},
                        {"max_position_embeddings", c.max_position_embeddings}})
    if (v <= 0) unsupported(file, key, v, "a positive integer");
  if (c.hidden_size % c.num_attention_heads != 0)
    throw Error(file, ": field 'num_attention_heads': unsupported value ", c.num_attention_heads,
                " (must divide hidden_size = ", c.hidden_size, ")");
  return c;
}

VaeConfig parse_vae_config(const json& j, const std::string& file) {
  check_object(j, file);
  VaeConfig c;
  c.raw = j;
  if (!absent(j, "_class_name")) {
    std::string cls = get_str(j, "_class_name", file, "");
    if (cls != "AutoencoderKL") unsupported(file, "_class_name", j.at("_class_name"), "AutoencoderKL");
  }
  c.in_channels = get_int(j, "in_channels", file, 3);
  c.out_channels = get_int(j, "out_channels", file, 3);
  c.latent_channels = get_int(j, "latent_channels", file, 4);
  c.sample_size = get_int(j, "sample_size", file, 512);
  c.down_block_types = get_str_list(j, "down_block_types", file, {"DownEncoderBlock2D"});
  c.up_block_types = get_str_list(j, "up_block_types", file, {"UpDecoderBlock2D"});
  c.block_out_channels = get_int_list(j, "block_out_channels", file);
  const size_t n = c.block_out_channels.size();
  if (c.down_block_types.size() != n)
    throw Error(file, ": field 'down_block_types': has ", c.down_block_types.size(),
                " entries but block_out_channels has ", n);
  if (c.up_block_types.size() != n)
    throw Error(file, ": field 'up_block_types': has ", c.up_block_types.size(),
                " entries but block_out_channels has ", n);
  c.layers_per_block = get_int(j, "layers_per_block", file, 1);
  if (c.layers_per_block <= 0)
    unsupported(file, "layers_per_block", c.layers_per_block, "a positive integer");
  c.norm_num_groups = get_int(j, "norm_num_groups", file, 32);
  check_groups(c.block_out_channels, c.norm_num_groups, "block_out_channels", file);
  c.act_fn = get_choice(j, "act_fn", file, "silu", {"silu"});
  c.scaling_factor = get_float(j, "scaling_factor", file, 0.18215f);
  c.mid_block_add_attention = get_bool(j, "mid_block_add_attention", file, true);
  c.use_quant_conv = get_bool(j, "use_quant_conv", file, true);
  c.use_post_quant_conv = get_bool(j, "use_post_quant_conv", file, true);
  require_absent(j, "shift_factor", file, "null");
  require_absent(j, "latents_mean", file, "null");
  require_absent(j, "latents_std", file, "null");
  return c;
}

SchedulerConfig parse_scheduler_config(const json& j, const std::string& file) {
  check_object(j, file);
  SchedulerConfig c;
  c.raw = j;
  c.class_name = get_str(j, "_class_name", file, "PNDMScheduler");
  c.num_train_timesteps = get_int(j, "num_train_timesteps", file, 1000);
  if (c.num_train_timesteps <= 0)
    unsupported(file, "num_train_timesteps", c.num_train_timesteps, "a positive integer");
  c.beta_start = get_float(j, "beta_start", file, 0.0001f);
  c.beta_end = get_float(j, "beta_end", file, 0.02f);
  c.beta_schedule =
      get_choice(j, "beta_schedule", file, "linear", {"scaled_linear", "linear", "squaredcos_cap_v2"});
  c.prediction_type = get_choice(j, "prediction_type", file, "epsilon", {"epsilon", "v_prediction"});
  c.timestep_spacing =
      get_choice(j, "timestep_spacing", file, "leading", {"leading", "trailing", "linspace"});
  c.steps_offset = get_int(j, "steps_offset", file, 0);
  c.clip_sample =
      get_bool(j, "clip_sample", file, c.class_name == "DDIMScheduler" || c.class_name == "DDPMScheduler");
  c.set_alpha_to_one = get_bool(j, "set_alpha_to_one", file, c.class_name == "DDIMScheduler");
  c.skip_prk_steps = get_bool(j, "skip_prk_steps", file, false);
  require_absent(j, "trained_betas", file, "null");
  require_value(j, "rescale_betas_zero_snr", file, false);
  return c;
}

// Writing back: the file we read when there is one (diffusers' extra fields survive), else the fields.
json UNetConfig::to_json() const {
  if (raw.is_object() && !raw.empty()) return raw;
  json j = {{"_class_name", "UNet2DConditionModel"},
            {"act_fn", act_fn},
            {"attention_head_dim", num_heads},
            {"block_out_channels", block_out_channels},
            {"center_input_sample", center_input_sample},
            {"cross_attention_dim", cross_attention_dim},
            {"down_block_types", down_block_types},
            {"downsample_padding", downsample_padding},
            {"dual_cross_attention", dual_cross_attention},
            {"flip_sin_to_cos", flip_sin_to_cos},
            {"freq_shift", freq_shift},
            {"in_channels", in_channels},
            {"layers_per_block", layers_per_block},
            {"mid_block_scale_factor", mid_block_scale_factor},
            {"mid_block_type", mid_block_type},
            {"norm_eps", norm_eps},
            {"norm_num_groups", norm_num_groups},
            {"only_cross_attention", only_cross_attention},
            {"out_channels", out_channels},
            {"resnet_time_scale_shift", resnet_time_scale_shift},
            {"sample_size", sample_size},
            {"time_embedding_type", time_embedding_type},
            {"transformer_layers_per_block", transformer_layers_per_block},
            {"up_block_types", up_block_types},
            {"upcast_attention", upcast_attention},
            {"use_linear_projection", use_linear_projection}};
  return j;
}

json ClipTextConfig::to_json() const {
  if (raw.is_object() && !raw.empty()) return raw;
  return {{"architectures", {"CLIPTextModel"}},
          {"model_type", "clip_text_model"},
          {"attention_dropout", 0.0},
          {"dropout", 0.0},
          {"bos_token_id", bos_token_id},
          {"eos_token_id", eos_token_id},
          {"pad_token_id", pad_token_id},
          {"hidden_act", hidden_act},
          {"hidden_size", hidden_size},
          {"initializer_factor", 1.0},
          {"initializer_range", 0.02},
          {"intermediate_size", intermediate_size},
          {"layer_norm_eps", layer_norm_eps},
          {"max_position_embeddings", max_position_embeddings},
          {"num_attention_heads", num_attention_heads},
          {"num_hidden_layers", num_hidden_layers},
          {"projection_dim", projection_dim},
          {"vocab_size", vocab_size}};
}

json VaeConfig::to_json() const {
  if (raw.is_object() && !raw.empty()) return raw;
  return {{"_class_name", "AutoencoderKL"},
          {"act_fn", act_fn},
          {"block_out_channels", block_out_channels},
          {"down_block_types", down_block_types},
          {"in_channels", in_channels},
          {"latent_channels", latent_channels},
          {"layers_per_block", layers_per_block},
          {"norm_num_groups", norm_num_groups},
          {"out_channels", out_channels},
          {"sample_size", sample_size},
          {"scaling_factor", scaling_factor},
          {"up_block_types", up_block_types},
          {"mid_block_add_attention", mid_block_add_attention},
          {"use_quant_conv", use_quant_conv},
          {"use_post_quant_conv", use_post_quant_conv}};
}

json SchedulerConfig::to_json() const {
  if (raw.is_object() && !raw.empty()) return raw;
  return {{"_class_name", class_name},
          {"num_train_timesteps", num_train_timesteps},
          {"beta_start", beta_start},
          {"beta_end", beta_end},
          {"beta_schedule", beta_schedule},
          {"prediction_type", prediction_type},
          {"timestep_spacing", timestep_spacing},
          {"steps_offset", steps_offset},
          {"clip_sample", clip_sample},
          {"set_alpha_to_one", set_alpha_to_one},
          {"skip_prk_steps", skip_prk_steps},
          {"trained_betas", nullptr}};
}

}  // namespace db
