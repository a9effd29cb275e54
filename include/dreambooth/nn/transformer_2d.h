#pragma once
// Transformer2DModel (diffusers transformers/transformer_2d.py, continuous input):
//   h = norm(x)                      GroupNorm(norm_num_groups, eps 1e-6 — fixed in diffusers)
//   h = proj_in(h)                   1x1 conv or Linear (use_linear_projection): the same op in NHWC
//   h = blocks(h [B, H*W, C], ctx)   BasicTransformerBlock x transformer_layers_per_block
//   y = proj_out(h) + x
#include <vector>

#include "dreambooth/nn/group_norm.h"
#include "dreambooth/nn/transformer_block.h"

namespace db {

struct Transformer2DOptions {
  int heads = 8;
  int layers = 1;
  int norm_groups = 32;
  float norm_eps = 1e-6f;        // the GroupNorm's
  float block_norm_eps = 1e-5f;  // the blocks' LayerNorms
  bool upcast_attention = false, only_cross_attention = false;
};

struct Transformer2D {
  GroupNorm norm;
  Linear proj_in, proj_out;
  std::vector<BasicTransformerBlock> blocks;
  Transformer2D() = default;
  Transformer2D(const ParamSet& p, const Transformer2DOptions& o);

  struct Saved {
    GroupNorm::Saved norm;
    Linear::Saved proj_in, proj_out;
    std::vector<BasicTransformerBlock::Saved> blocks;
  };
  // x [B, H, W, C], context [B, Tc, Cc] -> [B, H, W, C]
  Tensor forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved* s = nullptr) const;
  // dy [B, H, W, C] -> dx [B, H, W, C]; *dcontext [B, Tc, Cc] += (null: skipped)
  Tensor backward(Ctx& ctx, const Saved& s, const Tensor& dy, Transformer2D* grad, Tensor* dcontext) const;
};

}  // namespace db
