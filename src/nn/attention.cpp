#include "dreambooth/nn/attention.h"

namespace db {

Attention::Attention(const ParamSet& p, int heads, bool causal, bool upcast, const AttentionNames& n)
    : to_q(p.sub(n.q)), to_k(p.sub(n.k)), to_v(p.sub(n.v)), to_out(p.sub(n.out)) {
  params.heads = heads;
  params.causal = causal;
  params.upcast = upcast;
}

// x [B, Tq, C], context [B, Tk, Cc] -> [B, Tq, C]
Tensor Attention::forward(Ctx& ctx, const Tensor& x, const Tensor& context) const {
  const Tensor& kv = context.defined() ? context : x;
  Tensor q = to_q.forward(ctx, x);   // [B, Tq, H*D]
  Tensor k = to_k.forward(ctx, kv);  // [B, Tk, H*D]
  Tensor v = to_v.forward(ctx, kv);  // [B, Tk, H*D]
  Tensor o = ctx.alloc(q.shape());   // [B, Tq, H*D]
  ctx.ops.attention_forward(q, k, v, o, params, nullptr);
  return to_out.forward(ctx, o);  // [B, Tq, C]
}

}  // namespace db
