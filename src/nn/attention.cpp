#include "dreambooth/nn/attention.h"

namespace db {

Attention::Attention(const ParamSet& p, int heads, bool causal, bool upcast, const AttentionNames& n)
    : to_q(p.sub(n.q)), to_k(p.sub(n.k)), to_v(p.sub(n.v)), to_out(p.sub(n.out)) {
  params.heads = heads;
  params.causal = causal;
  params.upcast = upcast;
}

// x [B, Tq, C], context [B, Tk, Cc] (undefined: self) -> y [B, Tq, C]
Tensor Attention::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved* s) const {
  const Tensor& kv = context.defined() ? context : x;
  Tensor q = to_q.forward(ctx, x, s ? &s->to_q : nullptr);   // [B, Tq, H*D]
  Tensor k = to_k.forward(ctx, kv, s ? &s->to_k : nullptr);  // [B, Tk, H*D]
  Tensor v = to_v.forward(ctx, kv, s ? &s->to_v : nullptr);  // [B, Tk, H*D]
  Tensor o = ctx.alloc(q.shape());                           // [B, Tq, H*D]
  if (s) {
    s->cross = context.defined();
    s->q = q;
    s->k = k;
    s->v = v;
    s->o = o;
    s->lse = ctx.alloc_f32({x.dim(0), params.heads, x.dim(1)});
  }
  ctx.ops.attention_forward(q, k, v, o, params, s ? &s->lse : nullptr);
  return to_out.forward(ctx, o, s ? &s->to_out : nullptr);  // [B, Tq, C]
}

// dy [B, Tq, C] -> dx [B, Tq, C]. Cross-attention: *dcontext [B, Tk, Cc] += the context's gradient
// (one context feeds every cross-attention of a UNet); null skips it.
Tensor Attention::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Attention* grad,
                           Tensor* dcontext) const {
  Tensor dq = ctx.alloc(s.q.shape()), dk = ctx.alloc(s.k.shape()), dv = ctx.alloc(s.v.shape());
  Tensor dout = to_out.backward(ctx, s.to_out, dy, grad ? &grad->to_out : nullptr);  // [B, Tq, H*D]
  ctx.ops.attention_backward(dout, s.q, s.k, s.v, s.o, s.lse, params, dq, dk, dv);
  Tensor dx = to_q.backward(ctx, s.to_q, dq, grad ? &grad->to_q : nullptr);  // [B, Tq, C]
  const bool need_dkv = !s.cross || dcontext;
  Tensor dkv_k = to_k.backward(ctx, s.to_k, dk, grad ? &grad->to_k : nullptr, need_dkv);
  Tensor dkv_v = to_v.backward(ctx, s.to_v, dv, grad ? &grad->to_v : nullptr, need_dkv);
  if (!s.cross) {
    ctx.ops.add_forward(dx, dkv_k, dx);
    ctx.ops.add_forward(dx, dkv_v, dx);
  } else if (dcontext) {
    ctx.ops.add_forward(*dcontext, dkv_k, *dcontext);
    ctx.ops.add_forward(*dcontext, dkv_v, *dcontext);
  }
  return dx;
}

}  // namespace db
