#pragma once
// The VAE's blocks (diffusers models/unets/unet_2d_blocks.py, autoencoders/vae.py):
//   SpatialAttention:  diffusers Attention with group_norm, residual_connection, rescale_output_factor
//                      over an NHWC map seen as [B, H*W, C]; heads = C / attention_head_dim.
//   UNetMidBlock2D:    resnet, then (attention, resnet) x num_layers.
//   DownEncoderBlock2D: resnets, optional Downsample2D (padding from the caller: 0 in the VAE).
//   UpDecoderBlock2D:   resnets, optional Upsample2D.
#include <vector>

#include "dreambooth/nn/attention.h"
#include "dreambooth/nn/group_norm.h"
#include "dreambooth/nn/resample.h"
#include "dreambooth/nn/resnet_block.h"

namespace db {

struct SpatialAttention {
  GroupNorm group_norm;
  Attention attn;
  float rescale_output_factor = 1.f;
  SpatialAttention() = default;
  SpatialAttention(const ParamSet& p, int heads, int groups, float eps, float rescale = 1.f);
  // x [B, H, W, C] -> (x + to_out(attn(group_norm(x)))) / rescale, [B, H, W, C]
  Tensor forward(Ctx& ctx, const Tensor& x) const;
};

struct UNetMidBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::vector<SpatialAttention> attentions;  // empty when add_attention is false
  UNetMidBlock2D() = default;
  UNetMidBlock2D(const ParamSet& p, const ResnetOptions& r, int channels, int attention_head_dim,
                 bool add_attention, int num_layers = 1);
  // x [B, H, W, C], temb [B, T] or undefined -> [B, H, W, C]
  Tensor forward(Ctx& ctx, const Tensor& x, const Tensor& temb) const;
};

struct DownEncoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Downsample2D> downsamplers;  // 0 or 1
  DownEncoderBlock2D() = default;
  DownEncoderBlock2D(const ParamSet& p, const ResnetOptions& r, int num_layers, bool add_downsample,
                     int padding);
  // x [B, H, W, Cin] -> [B, H/2 (or H), W/2 (or W), Cout]
  Tensor forward(Ctx& ctx, const Tensor& x) const;
};

struct UpDecoderBlock2D {
  std::vector<ResnetBlock2D> resnets;
  std::vector<Upsample2D> upsamplers;  // 0 or 1
  UpDecoderBlock2D() = default;
  UpDecoderBlock2D(const ParamSet& p, const ResnetOptions& r, int num_layers, bool add_upsample);
  // x [B, H, W, Cin] -> [B, 2H (or H), 2W (or W), Cout]
  Tensor forward(Ctx& ctx, const Tensor& x) const;
};

}  // namespace db
