#pragma once
// The parameter registry (DESIGN.md decision 2): one flat table of (diffusers state-dict name, shape,
// offset) over one contiguous parameter buffer, and twin buffers laid out the same way (gradients,
// AdamW moments, the working copy). Loading, saving, all-reduce, clipping, AdamW and checkpoints
// iterate the table. The registries of the three models are built in models/registry.h.
//
// Conv weights are stored as [O, kh, kw, I] (NHWC-friendly); `torch_shape` keeps PyTorch's
// [O, I, kh, kw] for files. Every other tensor has the same shape in both.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dreambooth/core/tensor.h"

namespace db {

struct ParamInfo {
  std::string name;    // e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
  Shape torch_shape;   // as in the state dict / safetensors file
  Shape shape;         // as stored in our buffer ([O, kh, kw, I] for 4-D conv weights)
  int64_t offset = 0;  // in elements, into the flat buffer (aligned to 16 elements)
  int64_t numel = 0;
  bool is_conv() const { return torch_shape.size() == 4; }
};

class ParamRegistry {
 public:
  // Adds a parameter with its PyTorch shape; 4-D shapes are conv weights (stored permuted).
  void add(const std::string& name, const Shape& torch_shape);
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo* find(const std::string& name) const;  // nullptr when absent
  const ParamInfo& at(const std::string& name) const;    // throws naming the parameter
  int64_t total_numel() const { return total_; }         // buffer size incl. alignment padding
  int64_t param_count() const;                           // sum of numel (what users call "parameters")
  // A view of one parameter inside a flat buffer laid out by this registry.
  Tensor view(const Tensor& flat, const std::string& name) const;
  Tensor view(const Tensor& flat, const ParamInfo& p) const;
  // The flat range [first, second) of every parameter whose name starts with `prefix` (a diffusers block
  // such as "up_blocks.1."); those parameters must be contiguous in the table, as a block's are.
  std::pair<int64_t, int64_t> range(const std::string& prefix) const;

 private:
  std::vector<ParamInfo> params_;
  std::unordered_map<std::string, size_t> index_;
  int64_t total_ = 0;
};

// PyTorch [O, I, kh, kw] <-> our [O, kh, kw, I], f32.
void conv_weight_torch_to_ours(const float* src, float* dst, const Shape& torch_shape);
void conv_weight_ours_to_torch(const float* src, float* dst, const Shape& torch_shape);

}  // namespace db
