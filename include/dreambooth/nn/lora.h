#pragma once
// LoRA adapters (PEFT's LoraLayer on nn.Linear, as diffusers' train_dreambooth_lora.py uses it): a frozen
// Linear W gets y = W x + b + scale * B (A x), A [R, K], B [N, R], scale = alpha / R (generate's
// --lora-scale multiplies it). A model's adapters have their own ParamRegistry, named after the adapted
// module's diffusers path plus PEFT's suffixes ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.
// to_q.lora_A.weight"; "text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight"), and their own flat
// buffers (pipelines/train_step.h ModelBuffers), so the base model's buffers stay untouched and frozen.
// Linear (nn/linear.h) binds its adapter by name when its ParamSet carries an AdapterSet.
#include <cstdint>
#include <string>
#include <vector>

#include "dreambooth/nn/param_registry.h"

namespace db {

// The adapters of one model, as the layers see them.
struct AdapterSet {
  const ParamRegistry* reg = nullptr;
  Tensor weights;     // flat over reg, the activation dtype the model computes with
  Tensor grads;       // flat f32 over reg (undefined: inference); gradients are ADDED
  float scale = 1.f;  // alpha / rank
};

// Module-path suffixes adapted by default: the UNet's attention projections (diffusers'
// train_dreambooth_lora.py target_modules) and, optionally, the CLIP text encoder's.
const std::vector<std::string>& lora_unet_targets();  // to_q, to_k, to_v, to_out.0
const std::vector<std::string>& lora_text_targets();  // q_proj, k_proj, v_proj, out_proj

// Adapters for every 2-D "<path>.<target>.weight" of `base` ([N, K]): "<path>.<target>.lora_A.weight"
// [rank, K] and ".lora_B.weight" [N, rank], in the base's order.
ParamRegistry build_lora_registry(const ParamRegistry& base, const std::vector<std::string>& targets,
                                  int rank);

// PEFT's init, drawn from Philox (RngPurpose::LoraInit, step = `stream`, sample = the adapter's index in
// the registry): A ~ kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(K), 1/sqrt(K)); B = 0 (so training
// starts from the base model exactly). Host f32, laid out by `lreg`.
Tensor init_lora_params(const ParamRegistry& lreg, uint64_t seed, uint32_t stream);

// Host f32: base W [N, K] += scale * B A for every adapter of `lreg` (names as build_lora_registry makes
// them; every adapted module must exist in `base_reg`). Returns the number of weights changed.
int merge_lora(const ParamRegistry& base_reg, Tensor& base_params, const ParamRegistry& lreg,
               const Tensor& lora_params, float scale);

}  // namespace db
