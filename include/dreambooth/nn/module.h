#pragma once
// What every nn/ layer needs: a Ctx (the Ops backend and where activations come from) and a ParamSet
// (the registry + flat parameter buffer, seen through a diffusers name prefix such as
// "down_blocks.0.resnets.1."). Layers bind their tensors by the original state-dict names at build
// time and call Ops in forward(); they never loop over elements.
//
// Training: each layer X has a `struct Saved` (the activations its backward reads), a training forward
// `X::forward(..., Saved&)` that computes exactly what the inference forward does and fills Saved, and
// `X::backward(ctx, saved, dy, X* grad, ...)` returning dx. `grad` is the same layer built over the
// gradient buffer (ParamSet(registry, grad_flat, prefix)): its tensors are the gradient views, and
// parameter gradients are ADDED into them (null: frozen). Inputs shared by many layers (the context of
// cross-attention, the time embedding) take an accumulating `Tensor* d...` for the same reason.
#include <string>

#include "dreambooth/backend/ops.h"
#include "dreambooth/core/arena.h"
#include "dreambooth/models/registry.h"

namespace db {

struct Ctx {
  Ops& ops;
  Arena* arena = nullptr;  // activations from here when set, else ops.empty()
  Tensor alloc(const Shape& s) { return arena ? arena->alloc(s) : ops.empty(s); }
};

class ParamSet {
 public:
  ParamSet(const ParamRegistry& reg, const Tensor& flat, std::string prefix = "")
      : reg_(&reg), flat_(flat), prefix_(std::move(prefix)) {}
  // "a.b." + "c" -> a view of prefix "a.b.c."
  ParamSet sub(const std::string& name) const { return ParamSet(*reg_, flat_, prefix_ + name + "."); }
  bool has(const std::string& name) const { return reg_->find(prefix_ + name) != nullptr; }
  Tensor get(const std::string& name) const { return reg_->view(flat_, prefix_ + name); }  // throws if absent
  Tensor get_optional(const std::string& name) const { return has(name) ? get(name) : Tensor(); }
  const std::string& prefix() const { return prefix_; }

 private:
  const ParamRegistry* reg_;
  Tensor flat_;
  std::string prefix_;
};

}  // namespace db
