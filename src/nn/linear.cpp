#include "dreambooth/nn/linear.h"

#include "dreambooth/core/error.h"

namespace db {

Linear::Linear(const ParamSet& p) : weight(p.get("weight")), bias(p.get_optional("bias")) {
  const AdapterSet* a = p.adapters();
  if (!a || !a->reg->find(p.prefix() + "lora_A.weight")) return;
  lora.A = a->reg->view(a->weights, p.prefix() + "lora_A.weight");  // [R, K]
  lora.B = a->reg->view(a->weights, p.prefix() + "lora_B.weight");  // [N, R]
  if (a->grads.defined()) {
    lora.dA = a->reg->view(a->grads, p.prefix() + "lora_A.weight");
    lora.dB = a->reg->view(a->grads, p.prefix() + "lora_B.weight");
  }
  lora.scale = a->scale;
  DB_CHECK(weight.ndim() == 2 && lora.A.dim(1) == weight.dim(1) && lora.B.dim(0) == weight.dim(0) &&
               lora.B.dim(1) == lora.A.dim(0),
           "LoRA adapter of '", p.prefix(), "': A ", shape_str(lora.A.shape()), ", B ",
           shape_str(lora.B.shape()), " do not fit the weight ", shape_str(weight.shape()));
}

// x [..., K] -> y [..., N]
Tensor Linear::forward(Ctx& ctx, const Tensor& x, Saved* s) const {
  if (s) s->x = x;
  Shape shape = x.shape();
  shape.back() = out_features();
  Tensor y = ctx.alloc(shape);
  ctx.ops.linear_forward(x, weight, bias, y);
  if (lora.defined()) {
    Shape hs = x.shape();
    hs.back() = lora.A.dim(0);
    Tensor h = ctx.alloc(hs);  // [..., R]
    ctx.ops.linear_forward(x, lora.A, Tensor(), h);
    Tensor u = ctx.alloc(shape);  // [..., N]
    ctx.ops.linear_forward(h, lora.B, Tensor(), u);
    ctx.ops.add_forward(y, u, y, 1.f, lora.scale);
    if (s) s->h = h;
  }
  return y;
}

// dy [..., N] -> dx [..., K]; grad->weight [N, K], grad->bias [N] +=; lora.dA [R, K], lora.dB [N, R] +=
Tensor Linear::backward(Ctx& ctx, const Saved& s, const Tensor& dy, Linear* grad, bool need_dx) const {
  Tensor dx = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
  ctx.ops.linear_backward(dy, s.x, weight, need_dx ? &dx : nullptr, grad ? &grad->weight : nullptr,
                          grad && bias.defined() ? &grad->bias : nullptr);
  const bool train_lora = lora.dA.defined();
  if (lora.defined() && (train_lora || need_dx)) {
    Tensor dys = ctx.alloc(dy.shape());  // [..., N]: d (B A x), before the scale
    ctx.ops.scale_forward(dy, dys, lora.scale);
    Tensor dh = ctx.alloc(s.h.shape()), dA = lora.dA, dB = lora.dB;  // [..., R]
    ctx.ops.linear_backward(dys, s.h, lora.B, &dh, train_lora ? &dB : nullptr, nullptr);
    Tensor dxl = need_dx ? ctx.alloc(s.x.shape()) : Tensor();
    ctx.ops.linear_backward(dh, s.x, lora.A, need_dx ? &dxl : nullptr, train_lora ? &dA : nullptr, nullptr);
    if (need_dx) ctx.ops.add_forward(dx, dxl, dx);
  }
  return dx;
}

}  // namespace db
