#include "dreambooth/pipelines/export.h"

#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/nn/lora.h"
#include "dreambooth/pipelines/lora_file.h"

namespace db {

namespace {

// "down_blocks.3.resnets.1.rest" -> {3, 1, "rest"} after `head` ("down_blocks.") and `mid` (".resnets.").
bool split2(const std::string& name, const std::string& head, const std::string& mid, int& i, int& j,
            std::string& rest) {
  if (!name.starts_with(head)) return false;
  size_t p = head.size(), q = name.find('.', p);
  if (q == std::string::npos || name.compare(q, mid.size(), mid) != 0) return false;
  i = std::stoi(name.substr(p, q - p));
  p = q + mid.size();
  q = name.find('.', p);
  if (q == std::string::npos) return false;
  j = std::stoi(name.substr(p, q - p));
  rest = name.substr(q + 1);
  return true;
}

std::string resnet_part(const std::string& rest) {
  static const std::pair<const char*, const char*> m[] = {
      {"norm1.", "in_layers.0."},          {"conv1.", "in_layers.2."},
      {"norm2.", "out_layers.0."},         {"conv2.", "out_layers.3."},
      {"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."}};
  for (const auto& [hf, sd] : m)
    if (rest.starts_with(hf)) return sd + rest.substr(std::string(hf).size());
  throw Error("export: unexpected resnet parameter '", rest, "'");
}

std::string unet_name(const std::string& n, const UNetConfig& c) {
  static const std::pair<const char*, const char*> fixed[] = {{"time_embedding.linear_1.", "time_embed.0."},
                                                              {"time_embedding.linear_2.", "time_embed.2."},
                                                              {"conv_in.", "input_blocks.0.0."},
                                                              {"conv_norm_out.", "out.0."},
                                                              {"conv_out.", "out.2."}};
  for (const auto& [hf, sd] : fixed)
    if (n.starts_with(hf)) return sd + n.substr(std::string(hf).size());
  const int L = c.layers_per_block;
  int i = 0, j = 0;
  std::string rest;
  auto s = [](int k) { return std::to_string(k); };
  if (split2(n, "down_blocks.", ".resnets.", i, j, rest))
    return "input_blocks." + s(1 + i * (L + 1) + j) + ".0." + resnet_part(rest);
  if (split2(n, "down_blocks.", ".attentions.", i, j, rest))
    return "input_blocks." + s(1 + i * (L + 1) + j) + ".1." + rest;
  if (split2(n, "down_blocks.", ".downsamplers.", i, j, rest) && rest.starts_with("conv."))
    return "input_blocks." + s((i + 1) * (L + 1)) + ".0.op." + rest.substr(5);
  if (split2(n, "up_blocks.", ".resnets.", i, j, rest))
    return "output_blocks." + s(i * (L + 1) + j) + ".0." + resnet_part(rest);
  if (split2(n, "up_blocks.", ".attentions.", i, j, rest))
    return "output_blocks." + s(i * (L + 1) + j) + ".1." + rest;
  if (split2(n, "up_blocks.", ".upsamplers.", i, j, rest)) {
    const bool attn = c.up_block_types.at(size_t(i)).find("CrossAttn") != std::string::npos;
    return "output_blocks." + s(i * (L + 1) + L) + (attn ? ".2." : ".1.") + rest;
  }
  if (n.starts_with("mid_block.resnets.")) {
    const size_t p = 18, q = n.find('.', p);
    return "middle_block." + s(2 * std::stoi(n.substr(p, q - p))) + "." + resnet_part(n.substr(q + 1));
  }
  if (n.starts_with("mid_block.attentions.0.")) return "middle_block.1." + n.substr(23);
  throw Error("export: the UNet parameter '", n, "' has no place in the original checkpoint layout");
}

std::string vae_name(const std::string& n, const VaeConfig& c) {
  const int levels = int(c.block_out_channels.size());
  int i = 0, j = 0;
  std::string rest, side = n.substr(0, n.find('.') + 1),
                    m = n.substr(side.size());  // "encoder." | "decoder."
  auto s = [](int k) { return std::to_string(k); };
  auto resnet = [](std::string r) {
    return r.starts_with("conv_shortcut.") ? "nin_shortcut." + r.substr(14) : r;
  };
  if (split2(m, "down_blocks.", ".resnets.", i, j, rest))
    return side + "down." + s(i) + ".block." + s(j) + "." + resnet(rest);
  if (split2(m, "down_blocks.", ".downsamplers.", i, j, rest))
    return side + "down." + s(i) + ".downsample." + rest;
  if (split2(m, "up_blocks.", ".resnets.", i, j, rest))
    return side + "up." + s(levels - 1 - i) + ".block." + s(j) + "." + resnet(rest);
  if (split2(m, "up_blocks.", ".upsamplers.", i, j, rest))
    return side + "up." + s(levels - 1 - i) + ".upsample." + rest;
  if (m.starts_with("mid_block.resnets.")) {
    const size_t p = 18, q = m.find('.', p);
    return side + "mid.block_" + s(std::stoi(m.substr(p, q - p)) + 1) + "." + resnet(m.substr(q + 1));
  }
  if (m.starts_with("mid_block.attentions.0.")) {
    static const std::pair<const char*, const char*> a[] = {{"group_norm.", "norm."},
                                                            {"to_q.", "q."},
                                                            {"to_k.", "k."},
                                                            {"to_v.", "v."},
                                                            {"to_out.0.", "proj_out."}};
    const std::string r = m.substr(23);
    for (const auto& [hf, sd] : a)
      if (r.starts_with(hf)) return side + "mid.attn_1." + sd + r.substr(std::string(hf).size());
  }
  if (m.starts_with("conv_norm_out.")) return side + "norm_out." + m.substr(14);
  return n;  // conv_in, conv_out, quant_conv, post_quant_conv
}

// One component's parameters in PyTorch layout under their original-checkpoint names.
void add_component(std::vector<std::pair<std::string, Tensor>>& out, const ParamRegistry& reg,
                   const Tensor& flat, DType dtype, const std::string& prefix, const auto& rename, bool vae) {
  for (const ParamInfo& p : reg.params()) {
    Tensor t = Tensor::empty(p.torch_shape);
    if (p.is_conv())
      conv_weight_ours_to_torch(flat.f32() + p.offset, t.f32(), p.torch_shape);
    else
      std::memcpy(t.f32(), flat.f32() + p.offset, size_t(p.numel) * 4);
    std::string name = rename(p.name);
    if (vae && name.find(".mid.attn_1.") != std::string::npos && p.torch_shape.size() == 2)
      t = t.view({p.torch_shape[0], p.torch_shape[1], 1, 1});  // the original's 1x1 convs
    out.emplace_back(prefix + name, dtype == DType::F32 ? t : t.to(dtype));
  }
}

}  // namespace

ExportResult export_single_file(const ExportOptions& o) {
  DB_CHECK(o.dtype == DType::F32 || o.dtype == DType::F16 || o.dtype == DType::BF16,
           "export: --dtype must be fp16, bf16 or fp32");
  const ModelFolder mf = ModelFolder::open(o.model);
  DB_CHECK(mf.text_encoder.hidden_act == "quick_gelu", "export: ", o.model, "'s text encoder (hidden_act ",
           mf.text_encoder.hidden_act,
           ") is an SD 2.x (OpenCLIP) one; its original layout is not supported, "
           "only SD 1.x models are");
  ExportResult res;
  const ParamRegistry ureg = mf.registry(Component::UNet), treg = mf.registry(Component::TextEncoder),
                      vreg = mf.registry(Component::Vae);
  Tensor up = mf.load(Component::UNet, ureg), tp = mf.load(Component::TextEncoder, treg);
  const Tensor vp = mf.load(Component::Vae, vreg);
  if (!o.lora.empty()) {
    const LoraWeights w = read_lora_weights(o.lora);
    if (w.unet_params.defined()) res.lora_merged += merge_lora(ureg, up, w.unet, w.unet_params, o.lora_scale);
    if (w.te_params.defined())
      res.lora_merged += merge_lora(treg, tp, w.text_encoder, w.te_params, o.lora_scale);
  }
  std::vector<std::pair<std::string, Tensor>> tensors;
  add_component(
      tensors, ureg, up, o.dtype, "model.diffusion_model.",
      [&](const std::string& n) { return unet_name(n, mf.unet); }, false);
  add_component(
      tensors, vreg, vp, o.dtype, "first_stage_model.",
      [&](const std::string& n) { return vae_name(n, mf.vae); }, true);
  add_component(
      tensors, treg, tp, o.dtype, "cond_stage_model.transformer.",
      [](const std::string& n) { return n.starts_with("text_model.") ? n : "text_model." + n; }, false);
  for (const auto& [n, t] : tensors) res.bytes += int64_t(t.nbytes());
  res.tensors = int64_t(tensors.size());
  if (const auto parent = std::filesystem::path(o.out).parent_path(); !parent.empty())
    std::filesystem::create_directories(parent);
  write_safetensors(o.out, tensors, {{"format", "pt"}});
  return res;
}

}  // namespace db
