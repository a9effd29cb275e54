#include "dreambooth/pipelines/lora_file.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"

namespace db {

namespace {

constexpr const char* kTextModel = "text_model.";

// One component's adapters in the file's naming, scale folded into B, converted to `dtype`.
void add_component(std::vector<std::pair<std::string, Tensor>>& out, const std::string& prefix,
                   bool strip_text_model, const ParamRegistry& reg, const Tensor& params, float scale,
                   DType dtype) {
  for (const ParamInfo& p : reg.params()) {
    Tensor t = Tensor::empty(p.torch_shape);
    const bool is_b = p.name.ends_with("lora_B.weight");
    for (int64_t i = 0; i < p.numel; ++i) t.f32()[i] = params.f32()[p.offset + i] * (is_b ? scale : 1.f);
    std::string name = p.name;
    if (strip_text_model && name.starts_with(kTextModel)) name = name.substr(std::string(kTextModel).size());
    out.emplace_back(prefix + name, dtype == DType::F32 ? t : t.to(dtype));
  }
}

}  // namespace

void write_lora_weights(const std::string& path, const ParamRegistry& ureg, const Tensor& up,
                        const ParamRegistry* treg, const Tensor* tp, float scale, float alpha, DType dtype) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  add_component(tensors, "unet.", false, ureg, up, scale, dtype);
  if (treg && tp) add_component(tensors, "text_encoder.", true, *treg, *tp, scale, dtype);
  const int64_t rank = ureg.params().empty() ? 0 : ureg.params().front().torch_shape[0];
  write_safetensors(path, tensors,
                    {{"format", "pt"},
                     {"dreambooth.lora_rank", std::to_string(rank)},
                     {"dreambooth.lora_alpha", std::to_string(alpha)}});
}

LoraWeights read_lora_weights(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  LoraWeights w;
  std::vector<const SafeTensorInfo*> unet, te;
  for (const SafeTensorInfo& t : f.tensors()) {
    DB_CHECK(t.name.ends_with(".lora_A.weight") || t.name.ends_with(".lora_B.weight"), path, ": tensor '",
             t.name,
             "' is not a PEFT LoRA weight (<component>.<module>.lora_A/lora_B.weight); kohya and old ",
             "diffusers LoRA files are not supported");
    DB_CHECK(t.shape.size() == 2, path, ": tensor '", t.name, "' is not 2-D");
    if (t.name.starts_with("unet."))
      unet.push_back(&t);
    else if (t.name.starts_with("text_encoder."))
      te.push_back(&t);
    else
      throw Error(path, ": tensor '", t.name, "' belongs to no component (unet. or text_encoder.)");
  }
  DB_CHECK(!unet.empty() || !te.empty(), path, ": no LoRA weights");
  auto load = [&](const std::vector<const SafeTensorInfo*>& ts, size_t strip, bool text, ParamRegistry& reg,
                  Tensor& params) {
    if (ts.empty()) return;
    for (const SafeTensorInfo* t : ts) {
      std::string name = t->name.substr(strip);
      if (text && !name.starts_with(kTextModel)) name = kTextModel + name;
      reg.add(name, t->shape);
      if (name.ends_with("lora_A.weight")) {
        DB_CHECK(w.rank == 0 || w.rank == t->shape[0], path, ": adapters of different ranks (", w.rank, ", ",
                 t->shape[0], ")");
        w.rank = int(t->shape[0]);
      }
    }
    params = Tensor::zeros({reg.total_numel()});
    for (const SafeTensorInfo* t : ts) {
      std::string name = t->name.substr(strip);
      if (text && !name.starts_with(kTextModel)) name = kTextModel + name;
      f.read_f32(*t, params.f32() + reg.at(name).offset);
    }
    for (const ParamInfo& p : reg.params()) {
      const std::string other = p.name.ends_with("lora_A.weight")
                                    ? p.name.substr(0, p.name.size() - 13) + "lora_B.weight"
                                    : p.name.substr(0, p.name.size() - 13) + "lora_A.weight";
      DB_CHECK(reg.find(other), path, ": '", p.name, "' has no matching '", other, "'");
    }
  };
  load(unet, 5, false, w.unet, w.unet_params);
  load(te, 13, true, w.text_encoder, w.te_params);
  return w;
}

int write_kohya_lora(const std::string& path, const LoraWeights& w, DType dtype) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  int modules = 0;
  auto add = [&](const std::string& prefix, const ParamRegistry& reg, const Tensor& params) {
    if (!params.defined()) return;
    for (const ParamInfo& pa : reg.params()) {
      if (!pa.name.ends_with(".lora_A.weight")) continue;
      const std::string module = pa.name.substr(0, pa.name.size() - 14);
      std::string key = prefix + module;
      std::replace(key.begin(), key.end(), '.', '_');
      const ParamInfo& pb = reg.at(module + ".lora_B.weight");
      for (const auto& [p, suffix] :
           {std::pair<const ParamInfo*, const char*>{&pa, ".lora_down.weight"}, {&pb, ".lora_up.weight"}}) {
        Tensor t = Tensor::empty(p->torch_shape);
        std::memcpy(t.f32(), params.f32() + p->offset, size_t(p->numel) * 4);
        tensors.emplace_back(key + suffix, dtype == DType::F32 ? t : t.to(dtype));
      }
      Tensor alpha = Tensor::empty({});
      alpha.f32()[0] = float(pa.torch_shape[0]);
      tensors.emplace_back(key + ".alpha", alpha);
      ++modules;
    }
  };
  add("lora_unet_", w.unet, w.unet_params);
  add("lora_te_", w.text_encoder, w.te_params);
  write_safetensors(path, tensors, {{"format", "pt"}});
  return modules;
}

}  // namespace db
