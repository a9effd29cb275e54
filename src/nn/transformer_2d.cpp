#include "dreambooth/nn/transformer_2d.h"

namespace db {

Transformer2D::Transformer2D(const ParamSet& p, const Transformer2DOptions& o)
    : norm(p.sub("norm"), o.norm_groups, o.norm_eps), proj_in(p.sub("proj_in")), proj_out(p.sub("proj_out")) {
  for (int i = 0; i < o.layers; ++i)
    blocks.emplace_back(p.sub("transformer_blocks." + std::to_string(i)), o.heads, o.block_norm_eps,
                        o.upcast_attention, o.only_cross_attention);
}

// x [B, H, W, C], context [B, Tc, Cc] -> [B, H, W, C]
Tensor Transformer2D::forward(Ctx& ctx, const Tensor& x, const Tensor& context) const {
  const int64_t B = x.dim(0);
  Tensor h = proj_in.forward(ctx, norm.forward(ctx, x)).view({B, -1, proj_in.out_features()});  // [B, H*W, D]
  for (const BasicTransformerBlock& blk : blocks) h = blk.forward(ctx, h, context);
  h = proj_out.forward(ctx, h);  // [B, H*W, C]
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(h.view(x.shape()), x, y);
  return y;
}

}  // namespace db
