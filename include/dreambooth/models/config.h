#pragma once
// Typed model configs parsed from a diffusers folder's JSON files. Only what SD 1.x / 2.x use is
// supported; any other value fails with "FILE: field 'F': unsupported value V (supported: ...)".
//
// Numerics that differ between models come from here, never from constants in layers:
// UNet group-norm eps is unet/config.json's norm_eps (1e-5 in SD); the VAE's is fixed at 1e-6 by
// diffusers' Encoder/Decoder (no config field), and CLIP's layer-norm eps is layer_norm_eps.
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace db {

struct UNetConfig {
  int in_channels = 4, out_channels = 4, sample_size = 64;
  std::vector<std::string> down_block_types;  // CrossAttnDownBlock2D | DownBlock2D
  std::vector<std::string> up_block_types;    // CrossAttnUpBlock2D | UpBlock2D
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";
  std::vector<int> block_out_channels;
  int layers_per_block = 2;
  int transformer_layers_per_block = 1;
  // diffusers' "attention_head_dim" is, for SD 1.x/2.x UNets, really the NUMBER OF HEADS per block
  // (a historical naming bug kept for compatibility); int or per-block list in the JSON. num_heads has
  // one entry per down block; the mid block uses the last one; up blocks use the reversed list.
  std::vector<int> num_heads;
  std::optional<std::vector<int>> num_attention_heads;  // the newer explicit field, when present
  int cross_attention_dim = 768;
  bool use_linear_projection = false;
  bool upcast_attention = false;
  bool only_cross_attention = false;
  bool dual_cross_attention = false;
  bool center_input_sample = false;
  bool flip_sin_to_cos = true;
  int freq_shift = 0;
  int downsample_padding = 1;
  float mid_block_scale_factor = 1.f;
  float norm_eps = 1e-5f;
  int norm_num_groups = 32;
  std::string act_fn = "silu";
  std::string resnet_time_scale_shift = "default";
  std::string time_embedding_type = "positional";
  int time_embedding_dim() const { return block_out_channels.at(0) * 4; }
  nlohmann::json to_json() const;  // the config.json we write (diffusers-loadable)
  nlohmann::json raw;              // the parsed file, kept so saving writes back what was read
};

struct ClipTextConfig {
  int vocab_size = 49408, hidden_size = 768, intermediate_size = 3072;
  int num_hidden_layers = 12, num_attention_heads = 12, max_position_embeddings = 77;
  int projection_dim = 768;
  std::string hidden_act = "quick_gelu";  // quick_gelu | gelu
  float layer_norm_eps = 1e-5f;
  int bos_token_id = 49406, eos_token_id = 49407, pad_token_id = 49407;
  nlohmann::json to_json() const;
  nlohmann::json raw;
};

struct VaeConfig {
  int in_channels = 3, out_channels = 3, latent_channels = 4, sample_size = 512;
  std::vector<std::string> down_block_types;  // DownEncoderBlock2D
  std::vector<std::string> up_block_types;    // UpDecoderBlock2D
  std::vector<int> block_out_channels;
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float norm_eps = 1e-6f;  // fixed by diffusers' Encoder/Decoder, not a config field
  std::string act_fn = "silu";
  float scaling_factor = 0.18215f;
  bool mid_block_add_attention = true;
  bool use_quant_conv = true, use_post_quant_conv = true;
  int downscale_factor() const { return 1 << (int(block_out_channels.size()) - 1); }
  nlohmann::json to_json() const;
  nlohmann::json raw;
};

struct SchedulerConfig {
  std::string class_name = "PNDMScheduler";
  int num_train_timesteps = 1000;
  float beta_start = 0.00085f, beta_end = 0.012f;
  std::string beta_schedule = "scaled_linear";  // scaled_linear | linear | squaredcos_cap_v2
  std::string prediction_type = "epsilon";      // epsilon | v_prediction
  std::string timestep_spacing = "leading";     // leading | trailing | linspace
  int steps_offset = 0;
  bool clip_sample = false, set_alpha_to_one = false, skip_prk_steps = true;
  nlohmann::json to_json() const;
  nlohmann::json raw;
};

// Parsers: `file` names the JSON in messages. They validate every field they read.
UNetConfig parse_unet_config(const nlohmann::json& j, const std::string& file);
ClipTextConfig parse_clip_text_config(const nlohmann::json& j, const std::string& file);
VaeConfig parse_vae_config(const nlohmann::json& j, const std::string& file);
SchedulerConfig parse_scheduler_config(const nlohmann::json& j, const std::string& file);

// Reads and parses a JSON file; errors name the file (and line/column for syntax errors).
nlohmann::json read_json_file(const std::string& path);

}  // namespace db
