#include "dreambooth/nn/transformer_2d.h"

namespace db {

Transformer2D::Transformer2D(const ParamSet& p, const Transformer2DOptions& o)
    : norm(p.sub("norm"), o.norm_groups, o.norm_eps), proj_in(p.sub("proj_in")), proj_out(p.sub("proj_out")) {
  for (int i = 0; i < o.layers; ++i)
    blocks.emplace_back(p.sub("transformer_blocks." + std::to_string(i)), o.heads, o.block_norm_eps,
                        o.upcast_attention, o.only_cross_attention);
}

// x [B, H, W, C], context [B, Tc, Cc] -> [B, H, W, C]
Tensor Transformer2D::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved* s) const {
  const int64_t B = x.dim(0);
  if (s) s->blocks.resize(blocks.size());
  Tensor h = norm.forward(ctx, x, Activation::None, s ? &s->norm : nullptr);
  h = proj_in.forward(ctx, h, s ? &s->proj_in : nullptr)
          .view({B, -1, proj_in.out_features()});  // [B, H*W, D]
  for (size_t i = 0; i < blocks.size(); ++i)
    h = blocks[i].forward(ctx, h, context, s ? &s->blocks[i] : nullptr);
  h = proj_out.forward(ctx, h, s ? &s->proj_out : nullptr);  // [B, H*W, C]
  Tensor y = ctx.alloc(x.shape());
  ctx.ops.add_forward(h.view(x.shape()), x, y);
  return y;
}

// dy [B, H, W, C] -> dx [B, H, W, C]; *dcontext +=
Tensor Transformer2D::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Transformer2D* g,
                               Tensor* dcontext) const {
  const int64_t B = dy.dim(0);
  Tensor d = proj_out.backward(ctx, s.proj_out, dy.view({B, -1, dy.dim(-1)}), g ? &g->proj_out : nullptr);
  for (size_t i = blocks.size(); i-- > 0;)
    d = blocks[i].backward(ctx, s.blocks[i], d, g ? &g->blocks[i] : nullptr, dcontext);
  d = proj_in.backward(ctx, s.proj_in, d.view(s.proj_in.x.shape()), g ? &g->proj_in : nullptr);
  d = norm.backward(ctx, s.norm, d, g ? &g->norm : nullptr);  // [B, H, W, C]
  Tensor dx = ctx.alloc(dy.shape());
  ctx.ops.add_forward(dy, d, dx);
  return dx;
}

}  // namespace db
