#pragma once
// ResnetBlock2D (diffusers models/resnet.py, time_embedding_norm "default"):
//   h = conv1(act(norm1(x)))
//   h = h + time_emb_proj(act(temb))[:, None, None, :]   (when temb is given)
//   h = conv2(act(norm2(h)))                              (dropout: identity)
//   y = (conv_shortcut(x) or x + h) / output_scale_factor
#include "dreambooth/nn/conv2d.h"
#include "dreambooth/nn/group_norm.h"
#include "dreambooth/nn/linear.h"

namespace db {

struct ResnetOptions {
  int groups = 32;
  float eps = 1e-5f;
  float output_scale_factor = 1.f;
  Activation act = Activation::SiLU;
};

struct ResnetBlock2D {
  GroupNorm norm1, norm2;
  Conv2d conv1, conv2, conv_shortcut;  // conv_shortcut only when channels change
  Linear time_emb_proj;                // absent in the VAE (temb_channels None)
  ResnetOptions opt;
  ResnetBlock2D() = default;
  ResnetBlock2D(const ParamSet& p, const ResnetOptions& o);

  struct Saved {
    GroupNorm::Saved norm1, norm2;
    Conv2d::Saved conv1, conv2, conv_shortcut;
    Linear::Saved time_emb_proj;
    Tensor temb;  // [B, T] before the activation (undefined: no temb)
  };
  // x [B, H, W, Cin], temb [B, T] (undefined: none) -> [B, H, W, Cout]
  Tensor forward(Ctx& ctx, const Tensor& x, const Tensor& temb, Saved* s = nullptr) const;
  // dy [B, H, W, Cout] -> dx [B, H, W, Cin]; *dtemb [B, T] += (the time embedding feeds every resnet;
  // null: skipped)
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, ResnetBlock2D* grad, Tensor* dtemb) const;
};

}  // namespace db
