#pragma once
// What every nn/ layer needs: a Ctx (the Ops backend, where activations come from, who listens to
// finished gradients) and a ParamSet (the registry + flat parameter buffer, seen through a diffusers
// name prefix such as "down_blocks.0.resnets.1."). Layers bind their tensors by the original
// state-dict names at build time and call Ops in forward(); they never touch elements.
//
// One forward per layer (the llm.c way): `X::forward(ctx, ..., Saved* s = nullptr)`. Inference passes
// no Saved; training passes the layer's `struct Saved`, which the forward fills with what backward
// reads, computing exactly the same values. `X::backward(ctx, saved, dy, X* grad, ...)` returns dx and
// lives in the layer's own file. `grad` is the same layer built over the gradient buffer
// (ParamSet(registry, grad_flat, prefix)): its tensors are the gradient views, and parameter gradients
// are ADDED into them (null: frozen). Inputs shared by many layers (the context of cross-attention, the
// time embedding) take an accumulating `Tensor* d...` for the same reason.
#include <functional>
#include <string>

#include "dreambooth/backend/ops.h"
#include "dreambooth/nn/lora.h"
#include "dreambooth/nn/param_registry.h"

namespace db {

struct Ctx {
  Ops& ops;
  // Training: a model's backward calls this when the parameter gradients of one block (every parameter
  // whose name starts with the prefix, e.g. "up_blocks.0.") are final, in backward order, so their
  // reduction across ranks can start while backward continues (DESIGN.md decision 15). Empty: nobody
  // listens.
  std::function<void(const std::string& prefix)> grads_ready = {};
  // Activations and their gradients: backend memory in the activation dtype (ops.h precision contract).
  Tensor alloc(const Shape& s) { return ops.empty(s, ops.activation_dtype()); }
  // Statistics (norm mean/rstd, attention log-sum-exp): f32.
  Tensor alloc_f32(const Shape& s) { return ops.empty(s, DType::F32); }
  void notify_grads_ready(const std::string& prefix) const {
    if (grads_ready) grads_ready(prefix);
  }
};

class ParamSet {
 public:
  // adapters (may be null): LoRA adapters under the same names, bound by Linear (nn/lora.h); must outlive
  // the model's construction only.
  ParamSet(const ParamRegistry& reg, const Tensor& flat, std::string prefix = "",
           const AdapterSet* adapters = nullptr)
      : reg_(&reg), flat_(flat), prefix_(std::move(prefix)), adapters_(adapters) {}
  // "a.b." + "c" -> a view of prefix "a.b.c."
  ParamSet sub(const std::string& name) const {
    return ParamSet(*reg_, flat_, prefix_ + name + ".", adapters_);
  }
  bool has(const std::string& name) const { return reg_->find(prefix_ + name) != nullptr; }
  Tensor get(const std::string& name) const { return reg_->view(flat_, prefix_ + name); }  // throws if absent
  Tensor get_optional(const std::string& name) const { return has(name) ? get(name) : Tensor(); }
  const std::string& prefix() const { return prefix_; }
  const AdapterSet* adapters() const { return adapters_; }

 private:
  const ParamRegistry* reg_;
  Tensor flat_;
  std::string prefix_;
  const AdapterSet* adapters_ = nullptr;
};

}  // namespace db
