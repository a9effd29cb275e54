#pragma once
// AutoencoderKL (diffusers models/autoencoders/autoencoder_kl.py, vae.py Encoder/Decoder), NHWC:
//   encode: conv_in -> DownEncoderBlock2D x n -> UNetMidBlock2D -> silu(conv_norm_out) -> conv_out
//           -> quant_conv: moments [B, h, w, 2*latent] = (mean, logvar) on channels
//   decode: post_quant_conv -> conv_in -> UNetMidBlock2D -> UpDecoderBlock2D x n
//           -> silu(conv_norm_out) -> conv_out: image [B, H, W, out_channels]
// Group-norm eps is VaeConfig::norm_eps (1e-6, fixed by diffusers).
#include <vector>

#include "dreambooth/models/config.h"
#include "dreambooth/nn/vae_blocks.h"

namespace db {

class AutoencoderKL {
 public:
  AutoencoderKL(const VaeConfig& cfg, const ParamRegistry& reg, const Tensor& flat);
  // image [B, H, W, in_channels] -> moments [B, H/f, W/f, 2*latent_channels] (after quant_conv)
  Tensor encode(Ctx& ctx, const Tensor& image) const;
  // z [B, h, w, latent_channels] (unscaled latents) -> image [B, h*f, w*f, out_channels]
  Tensor decode(Ctx& ctx, const Tensor& z) const;
  const VaeConfig& config() const { return cfg_; }

 private:
  VaeConfig cfg_;
  Conv2d enc_conv_in_, enc_conv_out_, dec_conv_in_, dec_conv_out_;
  std::vector<DownEncoderBlock2D> down_;
  std::vector<UpDecoderBlock2D> up_;
  UNetMidBlock2D enc_mid_, dec_mid_;
  GroupNorm enc_norm_out_, dec_norm_out_;
  Linear quant_conv_, post_quant_conv_;  // 1x1 convs; undefined when disabled in the config
};

}  // namespace db
