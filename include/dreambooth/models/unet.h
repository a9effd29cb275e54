#pragma once
// UNet2DConditionModel (diffusers models/unets/unet_2d_condition.py) for SD 1.x / 2.x, NHWC:
//   temb = time_embedding(time_proj(t))                  [B, 4*C0]
//   h = conv_in(sample)                                   [B, h, w, C0]
//   down blocks (resnet [+ transformer]) x L [+ downsample], each output kept as a skip
//   mid block: resnet, transformer, resnet (output_scale_factor = mid_block_scale_factor)
//   up blocks: (cat(h, skip) -> resnet [+ transformer]) x (L+1) [+ upsample]
//   out = conv_out(silu(conv_norm_out(h)))               [B, h, w, out_channels]
#include <vector>

#include "dreambooth/models/config.h"
#include "dreambooth/nn/resample.h"
#include "dreambooth/nn/resnet_block.h"
#include "dreambooth/nn/timestep_embedding.h"
#include "dreambooth/nn/transformer_2d.h"

namespace db {

// CrossAttnDownBlock2D / DownBlock2D, CrossAttnUpBlock2D / UpBlock2D, UNetMidBlock2DCrossAttn:
// resnets[i] followed by attentions[i] when the block has attention.
struct UNetBlock {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Transformer2D> attentions;  // empty for DownBlock2D / UpBlock2D
  std::vector<Downsample2D> downsamplers;
  std::vector<Upsample2D> upsamplers;
  struct Saved {  // training forward's activations (nn/module.h)
    std::vector<ResnetBlock2D::Saved> resnets;
    std::vector<Transformer2D::Saved> attentions;
    std::vector<Downsample2D::Saved> downsamplers;
    std::vector<Upsample2D::Saved> upsamplers;
    std::vector<int64_t> skip_channels;  // up blocks: channels of the skip concatenated before resnets[j]
  };
};

class UNet2DConditionModel {
 public:
  // adapters: LoRA adapters on the listed Linears (nn/lora.h), null: none.
  UNet2DConditionModel(const UNetConfig& cfg, const ParamRegistry& reg, const Tensor& flat,
                       const AdapterSet* adapters = nullptr);
  const UNetConfig& config() const { return cfg_; }

  // Training (nn/module.h): forward with a Saved keeps what backward reads.
  //
  // Gradient checkpointing: set `gradient_checkpointing` before the training forward. The forward then
  // keeps, per down / mid / up block, only the block's inputs (the hidden state entering it, and for an
  // up block the skips it concatenates; temb and the encoder states are shared) and drops the block's
  // activations; backward, walking the blocks in reverse, re-runs each block's training forward from
  // those inputs to rebuild its Saved right before the block's backward, then frees it. Same operations
  // in the same order: the gradients are bit-identical to the non-checkpointed path.
  // Activations are ref-counted blocks of the backend's pool, so what the forward drops is reused by
  // the next allocation.
  struct Saved {
    bool gradient_checkpointing = false;  // set by the caller before forward()
    TimestepEmbedding::Saved time_embedding;
    Conv2d::Saved conv_in, conv_out;
    GroupNorm::Saved conv_norm_out;
    std::vector<UNetBlock::Saved> down, up;  // empty when checkpointing
    UNetBlock::Saved mid;                    // empty when checkpointing
    // checkpointing only: each block's input hidden state, the up blocks' skips (in pop order), the
    // time embedding and the encoder states
    std::vector<Tensor> down_in, up_in;
    Tensor mid_in, temb, ehs;
    std::vector<std::vector<Tensor>> up_skips;
  };
  // sample [B, h, w, in_channels] (NHWC), timesteps f32 [B] (per sample), encoder_hidden_states
  // [B, T, cross_attention_dim] -> [B, h, w, out_channels]; s (training) keeps what backward reads.
  Tensor forward(Ctx& ctx, const Tensor& sample, const Tensor& timesteps, const Tensor& encoder_hidden_states,
                 Saved* s = nullptr) const;
  // dout [B, h, w, out_channels] -> parameter gradients added into `grad` (this model built over the
  // gradient buffer) and, when non-null, the encoder states' gradient added into *d_encoder_hidden_states
  // [B, T, cross_attention_dim]. The sample's gradient is not computed (nothing upstream is trained).
  // Calls ctx.notify_grads_ready(prefix) as each block's parameter gradients become final: conv_out.,
  // conv_norm_out., up_blocks.N-1. .. up_blocks.0., mid_block., down_blocks.N-1. .. down_blocks.0.,
  // conv_in., time_embedding.
  void backward(Ctx& ctx, const Saved& s, const Tensor& dout, UNet2DConditionModel* grad,
                Tensor* d_encoder_hidden_states) const;

 private:
  // One block's forward / backward (the pieces of forward() and backward(); bs null: inference).
  // down: pushes the skips it produces; up: pops the skips it consumes, from the back.
  Tensor down_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb, const Tensor& ehs,
                            UNetBlock::Saved* bs, std::vector<Tensor>& skips) const;
  Tensor mid_block_forward(Ctx& ctx, Tensor h, const Tensor& temb, const Tensor& ehs,
                           UNetBlock::Saved* bs) const;
  Tensor up_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb, const Tensor& ehs,
                          UNetBlock::Saved* bs, std::vector<Tensor>& skips) const;
  // up: appends the skips' gradients to dskips (down-pass order); down: adds dskips[--k] before each
  // layer that produced a skip.
  Tensor up_block_backward(Ctx& ctx, size_t i, const UNetBlock::Saved& bs, Tensor d, UNet2DConditionModel* g,
                           Tensor& dtemb, Tensor* d_ehs, std::vector<Tensor>& dskips) const;
  Tensor mid_block_backward(Ctx& ctx, const UNetBlock::Saved& bs, Tensor d, UNet2DConditionModel* g,
                            Tensor& dtemb, Tensor* d_ehs) const;
  Tensor down_block_backward(Ctx& ctx, size_t i, const UNetBlock::Saved& bs, Tensor d,
                             UNet2DConditionModel* g, Tensor& dtemb, Tensor* d_ehs,
                             const std::vector<Tensor>& dskips, size_t& k) const;

  UNetConfig cfg_;
  TimestepEmbedding time_embedding_;
  Conv2d conv_in_, conv_out_;
  std::vector<UNetBlock> down_, up_;
  UNetBlock mid_;
  GroupNorm conv_norm_out_;
};

}  // namespace db
