#pragma once
// Timesteps + TimestepEmbedding (diffusers embeddings.py): sinusoidal projection of per-sample float
// timesteps, then linear_1 -> act -> linear_2.
#include "dreambooth/nn/linear.h"

namespace db {

struct TimestepEmbedding {
  TimestepEmbeddingParams proj;  // flip_sin_to_cos, freq_shift from the UNet config
  int proj_dim = 0;              // block_out_channels[0]
  Linear linear_1, linear_2;
  Activation act = Activation::SiLU;
  TimestepEmbedding() = default;
  TimestepEmbedding(const ParamSet& p, int proj_dim_, const TimestepEmbeddingParams& tp, Activation a)
      : proj(tp), proj_dim(proj_dim_), linear_1(p.sub("linear_1")), linear_2(p.sub("linear_2")), act(a) {}

  struct Saved {
    Linear::Saved linear_1, linear_2;
    Tensor h;  // [B, D]: linear_1's output, before the activation
  };
  // t f32 [B] -> temb [B, time_embed_dim]
  Tensor forward(Ctx& ctx, const Tensor& t, Saved* s = nullptr) const;
  // dy [B, D] -> parameter gradients only (timesteps are not differentiated)
  void backward(Ctx& ctx, const Saved& s, const Tensor& dy, TimestepEmbedding* grad) const;
};

}  // namespace db
