#pragma once
// CLIPTextModel (transformers models/clip/modeling_clip.py), the text encoder of SD 1.x / 2.x:
//   x = token_embedding(ids) + position_embedding(arange(T))   [B, T, H]
//   x = encoder.layers[i](x)                                   causal self-attention, pre-norm
//   last_hidden_state = final_layer_norm(x)                    [B, T, H]
// Parameters by their "text_model.*" state-dict names.
#include <vector>

#include "dreambooth/models/config.h"
#include "dreambooth/nn/clip_encoder_layer.h"

namespace db {

class ClipTextModel {
 public:
  // adapters: LoRA adapters (nn/lora.h), null: none.
  ClipTextModel(const ClipTextConfig& cfg, const ParamRegistry& reg, const Tensor& flat,
                const AdapterSet* adapters = nullptr);
  const ClipTextConfig& config() const { return cfg_; }

  // Training (nn/module.h): forward with a Saved keeps what backward reads. Gradient checkpointing
  // (set `gradient_checkpointing` before forward): only each encoder layer's input is kept, and backward
  // re-runs the layer's training forward right before its backward (bit-identical gradients).
  struct Saved {
    bool gradient_checkpointing = false;          // set by the caller before forward()
    Tensor ids;                                   // [B, T]
    std::vector<ClipEncoderLayer::Saved> layers;  // empty when checkpointing
    std::vector<Tensor> layer_in;                 // checkpointing only: each layer's input [B, T, H]
    LayerNorm::Saved final_layer_norm;
  };
  // ids [B, T] (I32 or I64, T <= max_position_embeddings) -> last_hidden_state [B, T, H]
  Tensor forward(Ctx& ctx, const Tensor& ids, Saved* s = nullptr) const;
  // dout [B, T, H] (of last_hidden_state) -> parameter gradients added into `grad` (this model built
  // over the gradient buffer), token and position embeddings included. Calls
  // ctx.notify_grads_ready(prefix) as gradients become final: text_model.final_layer_norm., each
  // text_model.encoder.layers.N. from the last, then text_model.embeddings.
  void backward(Ctx& ctx, const Saved& s, const Tensor& dout, ClipTextModel* grad) const;

 private:
  ClipTextConfig cfg_;
  Tensor token_embedding_, position_embedding_;  // [V, H], [P, H]
  std::vector<ClipEncoderLayer> layers_;
  LayerNorm final_layer_norm_;
};

}  // namespace db
