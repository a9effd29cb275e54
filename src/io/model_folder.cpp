#include "dreambooth/io/model_folder.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"

namespace db {
namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* weights_base(Component c) {
  return c == Component::TextEncoder ? "model" : "diffusion_pytorch_model";
}

// transformers' CLIPTextModel keeps position_ids as a buffer; old checkpoints store it, newer ones don't.
bool is_known_buffer(const std::string& name) {
  return ends_with(name, "embeddings.position_ids");
}

std::string shape_or_dtype(const SafeTensorInfo& t) {
  return str_cat(dtype_safetensors_name(t.dtype), shape_str(t.shape));
}

}  // namespace

const char* component_name(Component c) {
  switch (c) {
    case Component::UNet:
      return "unet";
    case Component::TextEncoder:
      return "text_encoder";
    case Component::Vae:
      return "vae";
  }
  return "?";
}

const std::vector<Component>& all_components() {
  static const std::vector<Component> all = {Component::UNet, Component::TextEncoder, Component::Vae};
  return all;
}

WeightFiles find_weight_files(const std::string& component_dir, Component c) {
  const std::string base = weights_base(c);
  const fs::path d(component_dir);
  for (const char* variant : {"", ".fp16"}) {
    fs::path single = d / (base + variant + ".safetensors");
    if (fs::is_regular_file(single)) return {single.string(), {single.string()}, false};
    fs::path index = d / (base + variant + ".safetensors.index.json");
    if (fs::is_regular_file(index)) {
      WeightFiles w{index.string(), {}, true};
      nlohmann::json j = read_json_file(index.string());
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw Error(index.string(), ": expected an object with a 'weight_map' object");
      std::vector<std::string> shards;
      for (const auto& [name, shard] : j["weight_map"].items()) {
        if (!shard.is_string())
          throw Error(index.string(), ": weight_map['", name, "']: expected a file name");
        std::string s = (d / shard.get<std::string>()).string();
        if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
      }
      std::sort(shards.begin(), shards.end());
      w.files = shards;
      return w;
    }
  }
  std::error_code ec;
  std::vector<std::string> pickles;
  if (fs::is_directory(d, ec))
    for (const auto& e : fs::directory_iterator(d, ec))
      if (ends_with(e.path().filename().string(), ".bin") ||
          ends_with(e.path().filename().string(), ".bin.index.json"))
        pickles.push_back(e.path().filename().string());
  if (!pickles.empty()) {
    std::sort(pickles.begin(), pickles.end());
    fs::path root = d.parent_path();
    throw Error(component_dir, ": found only PyTorch pickle weights (", pickles[0],
                "); only safetensors weights are supported; convert with: python -c \"from diffusers import "
                "StableDiffusionPipeline as P; P.from_pretrained('",
                root.string(), "').save_pretrained('", root.string(),
                "-safetensors', safe_serialization=True)\"");
  }
  throw Error(component_dir, ": no weights file (expected ", base, ".safetensors or ", base,
              ".safetensors.index.json)");
}

namespace {

struct Source {
  const SafetensorsFile* file = nullptr;
  const SafeTensorInfo* info = nullptr;
};

// Matches the file's tensors to the registry; throws one Error listing every problem.
std::vector<Source> match_weights(const SafetensorsSet& set, const ParamRegistry& reg,
                                  const std::string& weights) {
  const auto& params = reg.params();
  std::vector<Source> src(params.size());
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < params.size(); ++i) index[params[i].name] = i;

  std::vector<std::string> unexpected, misshaped, nonfloat;
  for (const std::string& name : set.names()) {
    auto [file, info] = set.find(name);
    auto it = index.find(name);
    if (it == index.end()) it = index.find("text_model." + name);  // transformers >= 5 drops the prefix
    if (it == index.end() || src[it->second].file) {
      if (!is_known_buffer(name)) unexpected.push_back(name + " " + shape_or_dtype(*info));
      continue;
    }
    const ParamInfo& p = params[it->second];
    if (info->shape != p.torch_shape) {
      misshaped.push_back(
          str_cat(name, ": expected ", shape_str(p.torch_shape), ", found ", shape_str(info->shape)));
    } else if (info->dtype != DType::F32 && info->dtype != DType::F16 && info->dtype != DType::BF16) {
      nonfloat.push_back(
          str_cat(name, ": ", dtype_safetensors_name(info->dtype), " (expected F32, F16 or BF16)"));
    }
    src[it->second] = {file, info};
  }
  std::vector<std::string> missing;
  for (size_t i = 0; i < params.size(); ++i)
    if (!src[i].file) missing.push_back(params[i].name + " " + shape_str(params[i].torch_shape));

  if (!missing.empty() || !unexpected.empty() || !misshaped.empty() || !nonfloat.empty()) {
    std::string msg = str_cat(weights, ": ", missing.size(), " missing, ", unexpected.size(), " unexpected, ",
                              misshaped.size(), " mis-shaped");
    if (!nonfloat.empty()) msg += str_cat(", ", nonfloat.size(), " non-float");
    msg += " tensors:";
    const char* sep = " ";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      for (const auto& s : v) {
        msg += str_cat(sep, what, " ", s);
        sep = "; ";
      }
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("mis-shaped", misshaped);
    list("non-float", nonfloat);
    throw Error(msg);
  }

  return src;
}

}  // namespace

void check_weights(const std::string& weights, const ParamRegistry& reg) {
  match_weights(SafetensorsSet::open(weights), reg, weights);
}

Tensor load_weights(const std::string& weights, const ParamRegistry& reg) {
  SafetensorsSet set = SafetensorsSet::open(weights);
  std::vector<Source> src = match_weights(set, reg, weights);
  const auto& params = reg.params();
  Tensor flat = Tensor::zeros({reg.total_numel()});
  float* base = flat.f32();
  std::exception_ptr failure;
  std::mutex mu;
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < params.size(); ++i) {
    try {
      const ParamInfo& p = params[i];
      float* dst = base + p.offset;
      if (p.is_conv()) {
        std::vector<float> tmp(size_t(p.numel));
        src[i].file->read_f32(*src[i].info, tmp.data());
        conv_weight_torch_to_ours(tmp.data(), dst, p.torch_shape);
      } else {
        src[i].file->read_f32(*src[i].info, dst);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);
  return flat;
}

void check_finite_weights(const std::string& weights, const ParamRegistry& reg, const Tensor& flat) {
  const auto& params = reg.params();
  const float* base = flat.f32();
  std::vector<int64_t> bad(params.size(), 0), first(params.size(), -1);
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < params.size(); ++i) {
    const float* p = base + params[i].offset;
    uint32_t any = 0;  // exponent all ones: NaN or infinity; an integer OR the compiler vectorizes
    for (int64_t k = 0; k < params[i].numel; ++k) {
      uint32_t u;
      std::memcpy(&u, p + k, 4);
      any |= uint32_t((u & 0x7f800000u) == 0x7f800000u);
    }
    if (!any) continue;
    for (int64_t k = 0; k < params[i].numel; ++k)
      if (!std::isfinite(p[k])) bad[i]++, first[i] = first[i] < 0 ? k : first[i];
  }
  for (size_t i = 0; i < params.size(); ++i)
    if (bad[i] > 0)
      throw Error(weights, ": tensor ", params[i].name, " holds ", bad[i],
                  " non-finite value(s) (first: ", base[params[i].offset + first[i]], " at element ",
                  first[i], "); the weights are damaged (a diverged or corrupted save?)");
}

Tensor ModelFolder::load(Component c, const ParamRegistry& reg) const {
  const std::string path = weight_files(c).path;
  Tensor flat = load_weights(path, reg);
  check_finite_weights(path, reg, flat);
  return flat;
}

void save_weights(const std::string& path, const ParamRegistry& reg, const Tensor& flat, DType dtype) {
  DB_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, path,
           ": weights can be saved as f32, f16 or bf16, not ", dtype_name(dtype));
  DB_CHECK(flat.numel() >= reg.total_numel(), path, ": parameter buffer ", flat.desc(),
           " is smaller than the registry (", reg.total_numel(), " elements)");
  const float* base = flat.f32();
  const auto& params = reg.params();
  std::vector<std::pair<std::string, Tensor>> out(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    if (dtype == DType::F32 && !p.is_conv())
      out[i] = {p.name, Tensor::wrap(const_cast<float*>(base + p.offset), p.torch_shape, DType::F32,
                                     Device::CPU, flat.storage_handle())};
    else
      out[i] = {p.name, Tensor::empty(p.torch_shape, dtype)};
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamInfo& p = params[i];
    const float* s = base + p.offset;
    std::vector<float> tmp;
    if (p.is_conv()) {
      if (dtype == DType::F32) {
        conv_weight_ours_to_torch(s, out[i].second.f32(), p.torch_shape);
        continue;
      }
      tmp.resize(size_t(p.numel));
      conv_weight_ours_to_torch(s, tmp.data(), p.torch_shape);
      s = tmp.data();
    } else if (dtype == DType::F32) {
      continue;
    }
    uint16_t* d = out[i].second.data<uint16_t>();
    if (dtype == DType::BF16)
      for (int64_t k = 0; k < p.numel; ++k) d[k] = f32_to_bf16(s[k]);
    else
      for (int64_t k = 0; k < p.numel; ++k) d[k] = f32_to_f16(s[k]);
  }
  write_safetensors(path, out, {{"format", "pt"}});
}

void write_json_file(const std::string& path, const nlohmann::json& j) {
  const std::string text = j.dump(2) + "\n";
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot create ", tmp, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < text.size()) {
    ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      int err = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error("writing ", tmp, ": ", std::strerror(err));
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error("writing ", tmp, ": ", std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw Error("renaming ", tmp, " to ", path, ": ", std::strerror(err));
  }
}

ModelFolder ModelFolder::open(const std::string& dir) {
  ModelFolder m;
  m.dir_ = dir;
  if (!fs::is_directory(dir)) throw Error(dir, ": not a directory (expected a diffusers model folder)");
  const fs::path d(dir);
  m.model_index = read_json_file((d / "model_index.json").string());
  if (!m.model_index.is_object()) throw Error((d / "model_index.json").string(), ": expected a JSON object");
  auto cfg = [&](const char* sub, const char* file) {
    fs::path p = d / sub / file;
    return std::pair{read_json_file(p.string()), p.string()};
  };
  auto [uj, uf] = cfg("unet", "config.json");
  m.unet = parse_unet_config(uj, uf);
  auto [tj, tf] = cfg("text_encoder", "config.json");
  m.text_encoder = parse_clip_text_config(tj, tf);
  auto [vj, vf] = cfg("vae", "config.json");
  m.vae = parse_vae_config(vj, vf);
  auto [sj, sf] = cfg("scheduler", "scheduler_config.json");
  m.scheduler = parse_scheduler_config(sj, sf);
  m.has_tokenizer = fs::is_regular_file(d / "tokenizer" / "vocab.json") &&
                    fs::is_regular_file(d / "tokenizer" / "merges.txt");
  for (Component c : all_components()) m.weight_files(c);  // fail early on absent or pickle-only weights
  return m;
}

std::string ModelFolder::component_dir(Component c) const {
  return (fs::path(dir_) / component_name(c)).string();
}

ParamRegistry ModelFolder::registry(Component c) const {
  switch (c) {
    case Component::UNet:
      return build_unet_registry(unet);
    case Component::TextEncoder:
      return build_clip_text_registry(text_encoder);
    case Component::Vae:
      return build_vae_registry(vae);
  }
  throw Error("unknown component");
}

nlohmann::json ModelFolder::config_json(Component c) const {
  switch (c) {
    case Component::UNet:
      return unet.to_json();
    case Component::TextEncoder:
      return text_encoder.to_json();
    case Component::Vae:
      return vae.to_json();
  }
  throw Error("unknown component");
}

void save_component(const std::string& root, Component c, const nlohmann::json& config,
                    const ParamRegistry& reg, const Tensor& flat, DType dtype) {
  const std::string name = component_name(c);
  const fs::path final_dir = fs::path(root) / name;
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = fs::path(root) / ("." + name + ".tmp-" + pid);
  const fs::path old = fs::path(root) / ("." + name + ".old-" + pid);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) && ec)
    throw Error(tmp.string(), ": cannot create (", ec.message(), ")");
  try {
    write_json_file((tmp / "config.json").string(), config);
    save_weights((tmp / (std::string(weights_base(c)) + ".safetensors")).string(), reg, flat, dtype);
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw Error(final_dir.string(), ": ", e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(old, ec);
}

}  // namespace db
