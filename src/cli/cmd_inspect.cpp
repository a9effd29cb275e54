// dreambooth inspect: what a diffusers model folder holds (configs, parameter counts, dtypes, files).
// Reads only safetensors headers (validated), never tensor data.
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/presets.h"
#include "text_format.h"

namespace db {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string join_ints(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Key config values, for the text and JSON outputs.
json summary(const ModelFolder& m, Component c) {
  switch (c) {
    case Component::UNet: {
      const UNetConfig& u = m.unet;
      return {{"class", "UNet2DConditionModel"},
              {"block_out_channels", u.block_out_channels},
              {"down_block_types", u.down_block_types},
              {"layers_per_block", u.layers_per_block},
              {"num_heads", u.num_heads},
              {"cross_attention_dim", u.cross_attention_dim},
              {"use_linear_projection", u.use_linear_projection},
              {"upcast_attention", u.upcast_attention},
              {"in_channels", u.in_channels},
              {"sample_size", u.sample_size}};
    }
    case Component::TextEncoder: {
      const ClipTextConfig& t = m.text_encoder;
      return {{"class", "CLIPTextModel"},
              {"hidden_size", t.hidden_size},
              {"num_hidden_layers", t.num_hidden_layers},
              {"num_attention_heads", t.num_attention_heads},
              {"intermediate_size", t.intermediate_size},
              {"vocab_size", t.vocab_size},
              {"max_position_embeddings", t.max_position_embeddings},
              {"hidden_act", t.hidden_act}};
    }
    case Component::Vae: {
      const VaeConfig& v = m.vae;
      return {{"class", "AutoencoderKL"},
              {"block_out_channels", v.block_out_channels},
              {"layers_per_block", v.layers_per_block},
              {"latent_channels", v.latent_channels},
              {"scaling_factor", v.scaling_factor},
              {"downscale_factor", v.downscale_factor()}};
    }
  }
  return {};
}

std::string summary_line(const ModelFolder& m, Component c) {
  switch (c) {
    case Component::UNet: {
      const UNetConfig& u = m.unet;
      return str_cat("UNet2DConditionModel  blocks ", join_ints(u.block_out_channels), " x",
                     u.layers_per_block, ", heads ", join_ints(u.num_heads), ", cross_attention_dim ",
                     u.cross_attention_dim,
                     u.use_linear_projection ? ", linear projections" : ", conv projections",
                     u.upcast_attention ? ", upcast attention" : "", ", sample_size ", u.sample_size);
    }
    case Component::TextEncoder: {
      const ClipTextConfig& t = m.text_encoder;
      return str_cat("CLIPTextModel  hidden ", t.hidden_size, ", layers ", t.num_hidden_layers, ", heads ",
                     t.num_attention_heads, ", mlp ", t.intermediate_size, ", vocab ", t.vocab_size, ", ",
                     t.hidden_act);
    }
    case Component::Vae: {
      const VaeConfig& v = m.vae;
      return str_cat("AutoencoderKL  blocks ", join_ints(v.block_out_channels), " x", v.layers_per_block,
                     ", latent_channels ", v.latent_channels, ", scaling_factor ", v.scaling_factor,
                     ", downscale ", v.downscale_factor());
    }
  }
  return "";
}

int run_inspect(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()("json", po::bool_switch(), "machine-readable output")(
      "params", po::bool_switch(), "list every tensor (name, shape, dtype)");
  po::options_description hidden;
  hidden.add_options()("dir", po::value<std::string>()->required(), "model folder");
  po::positional_options_description pos;
  pos.add("dir", 1);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, "dreambooth inspect DIR [--json] [--params]",
                          "Shows a diffusers model folder: per component the class, key config values, "
                          "parameter count, dtypes and files. Checks that every weights file is a valid "
                          "safetensors file whose tensors match the config.",
                          opts, vm, &pos, &hidden))
    return 0;
  const std::string dir = vm["dir"].as<std::string>();
  const bool as_json = vm["json"].as<bool>(), list = vm["params"].as<bool>();

  ModelFolder m = ModelFolder::open(dir);
  json out = {{"dir", dir}, {"pipeline", m.model_index.value("_class_name", "")}};
  for (Component c : all_components()) {
    const std::string name = component_name(c);
    WeightFiles w = m.weight_files(c);
    ParamRegistry reg = m.registry(c);
    check_weights(w.path, reg);  // validates headers; names and shapes match the config
    SafetensorsSet set = SafetensorsSet::open(w.path);
    std::set<std::string> dtypes;
    json params = json::array();
    for (const auto& t : set.names()) {
      const SafeTensorInfo* info = set.find(t).second;
      dtypes.insert(dtype_safetensors_name(info->dtype));
      if (list)
        params.push_back(
            {{"name", t}, {"shape", info->shape}, {"dtype", dtype_safetensors_name(info->dtype)}});
    }
    json files = json::array();
    for (const auto& f : w.files)
      files.push_back({{"path", fs::relative(f, dir).string()}, {"bytes", uint64_t(fs::file_size(f))}});
    json comp = summary(m, c);
    comp["parameters"] = reg.param_count();
    comp["tensors"] = reg.params().size();
    comp["dtypes"] = dtypes;
    comp["files"] = files;
    if (list) comp["params"] = params;
    out["components"][name] = comp;
  }
  const SchedulerConfig& s = m.scheduler;
  out["components"]["scheduler"] = {{"class", s.class_name},
                                    {"prediction_type", s.prediction_type},
                                    {"beta_schedule", s.beta_schedule},
                                    {"beta_start", s.raw.value("beta_start", double(s.beta_start))},
                                    {"beta_end", s.raw.value("beta_end", double(s.beta_end))},
                                    {"num_train_timesteps", s.num_train_timesteps},
                                    {"timestep_spacing", s.timestep_spacing},
                                    {"steps_offset", s.steps_offset}};
  out["components"]["tokenizer"] = {{"present", m.has_tokenizer}};

  if (as_json) {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << dir << ": " << out["pipeline"].get<std::string>() << "\n";
  int64_t total = 0;
  for (Component c : all_components()) {
    const json& comp = out["components"][component_name(c)];
    total += comp["parameters"].get<int64_t>();
    std::string dts;
    for (const auto& d : comp["dtypes"]) dts += (dts.empty() ? "" : ",") + d.get<std::string>();
    std::printf("%-13s %s\n", component_name(c), summary_line(m, c).c_str());
    std::printf("%-13s %s parameters in %zu tensors, %s\n", "",
                with_commas(comp["parameters"].get<int64_t>()).c_str(), comp["tensors"].get<size_t>(),
                dts.c_str());
    for (const auto& f : comp["files"])
      std::printf("%-13s %s  %s\n", "", f["path"].get<std::string>().c_str(),
                  human_bytes(f["bytes"].get<uint64_t>()).c_str());
    if (list)
      for (const auto& p : comp["params"])
        std::printf("%-13s   %s %s %s\n", "", p["name"].get<std::string>().c_str(),
                    shape_str(p["shape"].get<Shape>()).c_str(), p["dtype"].get<std::string>().c_str());
  }
  std::printf("%-13s %s, prediction %s, %s betas %g..%g, %d train steps, spacing %s\n", "scheduler",
              s.class_name.c_str(), s.prediction_type.c_str(), s.beta_schedule.c_str(), s.beta_start,
              s.beta_end, s.num_train_timesteps, s.timestep_spacing.c_str());
  std::printf("%-13s %s\n", "tokenizer", m.has_tokenizer ? "present (vocab.json, merges.txt)" : "absent");
  std::printf("%-13s %s parameters (unet + text_encoder + vae)\n", "total", with_commas(total).c_str());
  return 0;
}

}  // namespace
}  // namespace db

DB_COMMAND(inspect, "inspect", "show a model folder's configs, parameter counts, dtypes and files",
           db::run_inspect);
