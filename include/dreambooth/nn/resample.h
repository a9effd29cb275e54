#pragma once
// Downsample2D / Upsample2D (diffusers models/downsampling.py, upsampling.py), conv variants only.
//   Downsample2D: conv 3x3 stride 2, padding p; p == 0 means F.pad(x, (0, 1, 0, 1)) first (VAE).
//   Upsample2D:   nearest 2x interpolation, then conv 3x3 padding 1.
#include "dreambooth/nn/conv2d.h"

namespace db {

struct Downsample2D {
  Conv2d conv;
  Downsample2D() = default;
  Downsample2D(const ParamSet& p, int padding);
  struct Saved {
    Conv2d::Saved conv;
  };
  // x [B, H, W, C] -> [B, H/2, W/2, C]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const {
    return conv.forward(ctx, x, s ? &s->conv : nullptr);
  }
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Downsample2D* grad) const;
};

struct Upsample2D {
  Conv2d conv;
  Upsample2D() = default;
  explicit Upsample2D(const ParamSet& p) : conv(p.sub("conv"), Conv2dGeometry::same(1)) {}
  struct Saved {
    Conv2d::Saved conv;  // its x is the upsampled [B, 2H, 2W, C]
  };
  // x [B, H, W, C] -> [B, 2H, 2W, C]
  Tensor forward(Ctx& ctx, const Tensor& x, Saved* s = nullptr) const;
  // dy [B, 2H, 2W, C] -> dx [B, H, W, C]
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Upsample2D* grad) const;
};

}  // namespace db
