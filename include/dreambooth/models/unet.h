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
  UNet2DConditionModel(const UNetConfig& cfg, const ParamRegistry& reg, const Tensor& flat);
  // sample [B, h, w, in_channels] (NHWC), timesteps [B] (float, per sample), encoder_hidden_states
  // [B, T, cross_attention_dim] -> [B, h, w, out_channels]
  Tensor forward(Ctx& ctx, const Tensor& sample, const Tensor& timesteps,
                 const Tensor& encoder_hidden_states) const;
  const UNetConfig& config() const { return cfg_; }

  // Training (nn/module.h): the forward above, keeping what backward reads.
  struct Saved {
    TimestepEmbedding::Saved time_embedding;
    Conv2d::Saved conv_in, conv_out;
    GroupNorm::Saved conv_norm_out;
    std::vector<UNetBlock::Saved> down, up;
    UNetBlock::Saved mid;
  };
  Tensor forward(Ctx& ctx, const Tensor& sample, const Tensor& timesteps, const Tensor& encoder_hidden_states,
                 Saved& s) const;
  // dout [B, h, w, out_channels] -> parameter gradients added into `grad` (this model built over the
  // gradient buffer) and, when non-null, the encoder states' gradient added into *d_encoder_hidden_states
  // [B, T, cross_attention_dim]. The sample's gradient is not computed (nothing upstream is trained).
  void backward(Ctx& ctx, const Saved& s, const Tensor& dout, UNet2DConditionModel* grad,
                Tensor* d_encoder_hidden_states) const;

 private:
  UNetConfig cfg_;
  TimestepEmbedding time_embedding_;
  Conv2d conv_in_, conv_out_;
  std::vector<UNetBlock> down_, up_;
  UNetBlock mid_;
  GroupNorm conv_norm_out_;
};

}  // namespace db
