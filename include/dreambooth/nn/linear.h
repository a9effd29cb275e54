#pragma once
// Linear (torch.nn.Linear): weight [N, K], optional bias [N]. Also binds a 1x1 conv ([N, 1, 1, K]),
// which is the same op on NHWC / [B, T, C] data (Transformer2D proj_in/proj_out, VAE quant_conv).
// With a LoRA adapter (nn/lora.h; bound when the ParamSet's AdapterSet has "<prefix>lora_A.weight"):
// y = W x + b + scale * B (A x), and backward adds the adapter's gradients into its own buffers.
#include "dreambooth/nn/module.h"

namespace db {

struct LoraAdapter {
  Tensor A, B;    // [R, K], [N, R] (working dtype); undefined: no adapter
  Tensor dA, dB;  // f32 gradient views (undefined: inference)
  float scale = 0.f;
  bool defined() const { return A.defined(); }
};

struct Linear {
  Tensor weight, bias;  // [N, K] (or [N, 1, 1, K]), [N] or undefined
  LoraAdapter lora;
  Linear() = default;
  explicit Linear(const ParamSet& p);
  int64_t out_features() const { return weight.dim(0); }

  struct Saved {
    Tensor x;  // [..., K]
    Tensor h;  // [..., R] = A x (LoRA only)
  };
  // x [..., K] -> y [..., N]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  // dy [..., N] -> dx [..., K] (undefined when !need_dx); grad->weight [N, K], grad->bias [N] += (null
  // grad: frozen). The adapter's gradients (lora.dA, lora.dB) are added whatever `grad` is.
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx = true) const;
};

}  // namespace db
