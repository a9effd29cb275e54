// Attention / FeedForward training forward and backward.
#include "dreambooth/nn/attention.h"
#include "dreambooth/nn/feed_forward.h"

namespace db {

// x [B, Tq, C], context [B, Tk, Cc] (undefined: self) -> y [B, Tq, C]
Tensor Attention::forward(Ctx& ctx, const Tensor& x, const Tensor& context, Saved& s) const {
  const Tensor& kv = context.defined() ? context : x;
  s.cross = context.defined();
  s.q = to_q.forward(ctx, x, s.to_q);   // [B, Tq, H*D]
  s.k = to_k.forward(ctx, kv, s.to_k);  // [B, Tk, H*D]
  s.v = to_v.forward(ctx, kv, s.to_v);  // [B, Tk, H*D]
  s.o = ctx.alloc(s.q.shape());         // [B, Tq, H*D]
  s.lse = ctx.alloc({x.dim(0), params.heads, x.dim(1)});
  ctx.ops.attention_forward(s.q, s.k, s.v, s.o, params, &s.lse);
  return to_out.forward(ctx, s.o, s.to_out);  // [B, Tq, C]
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

// x [B, T, dim] -> [B, T, dim]
Tensor FeedForward::forward(Ctx& ctx, const Tensor& x, Saved& s) const {
  s.h2 = proj.forward(ctx, x, s.proj);  // [B, T, 2*inner]
  Shape sh = s.h2.shape();
  sh.back() /= 2;
  Tensor h = ctx.alloc(sh);  // [B, T, inner]
  ctx.ops.geglu_forward(s.h2, h);
  return out.forward(ctx, h, s.out);
}

// dy [B, T, dim] -> dx [B, T, dim]
Tensor FeedForward::backward(Ctx& ctx, const Saved& s, const Tensor& dy, FeedForward* grad) const {
  Tensor dh = out.backward(ctx, s.out, dy, grad ? &grad->out : nullptr);  // [B, T, inner]
  Tensor dh2 = ctx.alloc(s.h2.shape());                                   // [B, T, 2*inner]
  ctx.ops.geglu_backward(s.h2, dh, dh2);
  return proj.backward(ctx, s.proj, dh2, grad ? &grad->proj : nullptr);
}

}  // namespace db
