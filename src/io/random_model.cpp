#include "dreambooth/io/random_model.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "dreambooth/core/error.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/init_weights.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/text/clip_vocab.h"

namespace db {
namespace {

namespace fs = std::filesystem;

// The one place that writes tokenizer files (implemented in src/text/clip_vocab.cpp).
void write_tokenizer(const fs::path& dir, const nlohmann::json& tok) {
  fs::create_directories(dir);
  write_clip_tokenizer_files(dir.string(), tok.value("vocab_size", 49408),
                             tok.value("pad_token", std::string("<|endoftext|>")),
                             tok.value("model_max_length", 77));
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string with_commas(int64_t v) {
  std::string d = std::to_string(v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return out;
}

}  // namespace

void write_random_model(const RandomModelOptions& o) {
  fs::path out = fs::path(o.dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // "a/b/" -> "a/b"
  DB_CHECK(!out.empty() && out.filename() != "." && out.filename() != "..", "init-model: bad output folder '",
           o.dir, "'");
  DB_CHECK(o.dtype == DType::F32 || o.dtype == DType::F16 || o.dtype == DType::BF16, out.string(),
           ": weights can be written as fp32, fp16 or bf16, not ", dtype_name(o.dtype));
  if (fs::exists(out)) {
    if (!fs::is_directory(out)) throw Error(out.string(), ": exists and is not a directory");
    if (!fs::is_empty(out) && !o.overwrite)
      throw Error(out.string(), ": exists and is not empty (use --overwrite to replace it)");
  }
  nlohmann::json p = preset(o.preset);
  const std::string src = "preset " + o.preset;
  UNetConfig unet = parse_unet_config(p["unet"], src + ": unet");
  ClipTextConfig te = parse_clip_text_config(p["text_encoder"], src + ": text_encoder");
  VaeConfig vae = parse_vae_config(p["vae"], src + ": vae");
  parse_scheduler_config(p["scheduler"], src + ": scheduler");

  // Built next to the destination, then renamed into place (DESIGN.md decision 8).
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  const std::string pid = std::to_string(::getpid());
  const std::string base =
      out.filename().empty() ? out.parent_path().filename().string() : out.filename().string();
  const fs::path tmp = parent / ("." + base + ".tmp-" + pid);
  const fs::path old = parent / ("." + base + ".old-" + pid);
  std::error_code ec;
  try {
    fs::create_directories(parent);
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
    write_json_file((tmp / "model_index.json").string(), p["model_index"]);
    fs::create_directories(tmp / "scheduler");
    write_json_file((tmp / "scheduler" / "scheduler_config.json").string(), p["scheduler"]);
    write_tokenizer(tmp / "tokenizer", p["tokenizer"]);
    struct Part {
      Component c;
      ParamRegistry reg;
      nlohmann::json config;
    };
    std::vector<Part> parts;
    parts.push_back({Component::UNet, build_unet_registry(unet), p["unet"]});
    parts.push_back({Component::TextEncoder, build_clip_text_registry(te), p["text_encoder"]});
    parts.push_back({Component::Vae, build_vae_registry(vae), p["vae"]});
    for (size_t i = 0; i < parts.size(); ++i) {
      const Part& part = parts[i];
      auto t0 = std::chrono::steady_clock::now();
      Tensor flat = init_weights(part.reg, o.seed, uint32_t(i));
      const double t_init = seconds_since(t0);
      t0 = std::chrono::steady_clock::now();
      save_component(tmp.string(), part.c, part.config, part.reg, flat, o.dtype);
      if (o.progress) {
        char line[256];
        std::snprintf(line, sizeof line, "%s: %s parameters, initialised in %.1f s, written as %s in %.1f s",
                      component_name(part.c), with_commas(part.reg.param_count()).c_str(), t_init,
                      dtype_name(o.dtype), seconds_since(t0));
        o.progress(line);
      }
    }
    if (fs::exists(out)) fs::rename(out, old);
    fs::rename(tmp, out);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(out.string(), ": ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(old, ec);
}

}  // namespace db
