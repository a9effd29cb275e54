#!/usr/bin/env python3
"""Golden gradients of the backend ops (OpsBackward.* tests) from torch autograd, fp32 on CPU.

For each case: the inputs, the upstream gradient dy and torch's gradients, all in our layouts (NHWC
feature maps, conv weights [O, kh, kw, I], sequences [B, T, H*D]), in one safetensors file.
Tensor names are "<case>.<tensor>". Run from the repo root:

    /opt/venvs/ref/bin/python tests/reference/make_ops_grad_golden.py [--out tests/golden/ops_grad]
"""
import argparse
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(0)
out = {}


def put(case, **tensors):
    for k, v in tensors.items():
        out[f"{case}.{k}"] = v.detach().to(torch.float32).contiguous().clone()


def leaf(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).requires_grad_()


def nchw_to_nhwc(t):
    return t.permute(0, 2, 3, 1)


def conv_w_ours(w):  # [O, I, kh, kw] -> [O, kh, kw, I]
    return w.permute(0, 2, 3, 1)


# ---- linear: x [2, 5, 12], w [9, 12], b [9]
x, w, b = leaf(2, 5, 12), leaf(9, 12), leaf(9)
y = F.linear(x, w, b)
dy = torch.randn_like(y)
y.backward(dy)
put("linear", x=x, w=w, b=b, y=y, dy=dy, dx=x.grad, dw=w.grad, db=b.grad)

# ---- conv2d (NCHW in torch; stored NHWC / [O, kh, kw, I])
conv_cases = {
    "conv_k3s1p1": dict(k=3, stride=1, pad=(1, 1, 1, 1), H=6, W=6),
    "conv_k3s2p1": dict(k=3, stride=2, pad=(1, 1, 1, 1), H=6, W=6),
    "conv_k3s2p1_odd": dict(k=3, stride=2, pad=(1, 1, 1, 1), H=7, W=5),
    "conv_k3s2_asym": dict(k=3, stride=2, pad=(0, 1, 0, 1), H=6, W=6),  # VAE Downsample2D: (left, right, top, bottom)
    "conv_k1": dict(k=1, stride=1, pad=(0, 0, 0, 0), H=6, W=6),
}
for name, c in conv_cases.items():
    x, w, b = leaf(2, 8, c["H"], c["W"]), leaf(12, 8, c["k"], c["k"], scale=0.2), leaf(12)
    y = F.conv2d(F.pad(x, c["pad"]), w, b, stride=c["stride"])
    dy = torch.randn_like(y)
    y.backward(dy)
    put(name, x=nchw_to_nhwc(x), w=conv_w_ours(w), b=b, y=nchw_to_nhwc(y), dy=nchw_to_nhwc(dy),
        dx=nchw_to_nhwc(x.grad), dw=conv_w_ours(w.grad), db=b.grad)

# ---- group norm: x [2, 16, 4, 3] NCHW, 4 groups, eps 1e-6, with and without SiLU
for name, silu in (("group_norm", False), ("group_norm_silu", True)):
    x, g, b = leaf(2, 16, 4, 3, scale=2.0), leaf(16), leaf(16)
    x.data += 0.5
    y = F.group_norm(x, 4, g, b, eps=1e-6)
    if silu:
        y = F.silu(y)
    dy = torch.randn_like(y)
    y.backward(dy)
    put(name, x=nchw_to_nhwc(x), gamma=g, beta=b, y=nchw_to_nhwc(y), dy=nchw_to_nhwc(dy),
        dx=nchw_to_nhwc(x.grad), dgamma=g.grad, dbeta=b.grad)

# ---- layer norm: x [2, 5, 24], eps 1e-5
x, g, b = leaf(2, 5, 24, scale=1.5), leaf(24), leaf(24)
y = F.layer_norm(x, (24,), g, b, eps=1e-5)
dy = torch.randn_like(y)
y.backward(dy)
put("layer_norm", x=x, gamma=g, beta=b, y=y, dy=dy, dx=x.grad, dgamma=g.grad, dbeta=b.grad)


# ---- attention: q [B, Tq, H*D], k/v [B, Tk, H*D], explicit softmax as diffusers' AttnProcessor
def attention(q, k, v, heads, causal):
    B, Tq, HD = q.shape
    Tk, D = k.shape[1], HD // heads
    qh = q.view(B, Tq, heads, D).transpose(1, 2)
    kh = k.view(B, Tk, heads, D).transpose(1, 2)
    vh = v.view(B, Tk, heads, D).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2) / math.sqrt(D)
    if causal:
        s = s.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(1), float("-inf"))
    o = s.softmax(-1) @ vh
    return o.transpose(1, 2).reshape(B, Tq, HD)


for name, Tq, Tk, causal in (("attn_self", 5, 5, False), ("attn_cross", 5, 7, False),
                             ("attn_causal", 6, 6, True)):
    B, H, D = 2, 2, 8
    q, k, v = leaf(B, Tq, H * D), leaf(B, Tk, H * D), leaf(B, Tk, H * D)
    o = attention(q, k, v, H, causal)
    do = torch.randn_like(o)
    o.backward(do)
    put(name, q=q, k=k, v=v, out=o, dout=do, dq=q.grad, dk=k.grad, dv=v.grad)

# ---- activations: x [3, 7, 5] with a wide range
acts = {"silu": F.silu, "gelu": lambda t: F.gelu(t, approximate="none"),
        "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}
for name, fn in acts.items():
    x = leaf(3, 7, 5, scale=3.0)
    y = fn(x)
    dy = torch.randn_like(y)
    y.backward(dy)
    put(name, x=x, y=y, dy=dy, dx=x.grad)

# ---- GEGLU (diffusers): hidden, gate = x.chunk(2, -1); hidden * gelu(gate)
x = leaf(2, 3, 20, scale=2.0)
hidden, gate = x.chunk(2, dim=-1)
y = hidden * F.gelu(gate)
dy = torch.randn_like(y)
y.backward(dy)
put("geglu", x=x, y=y, dy=dy, dx=x.grad)

# ---- broadcast add: x [2, 6, 8] + v [2, 1, 8]
x, v = leaf(2, 6, 8), leaf(2, 8)
y = x + v[:, None, :]
dy = torch.randn_like(y)
y.backward(dy)
put("add_broadcast", x=x, v=v, dy=dy, dv=v.grad)

# ---- channel concat: a [2, 3, 3, 5], b [2, 3, 3, 4] (NHWC, dim -1)
a, b = leaf(2, 3, 3, 5), leaf(2, 3, 3, 4)
y = torch.cat([a, b], dim=-1)
dy = torch.randn_like(y)
y.backward(dy)
put("concat", a=a, b=b, dy=dy, da=a.grad, db=b.grad)

# ---- nearest 2x upsample: x [2, 5, 3, 4] NCHW
x = leaf(2, 5, 3, 4)
y = F.interpolate(x, scale_factor=2.0, mode="nearest")
dy = torch.randn_like(y)
y.backward(dy)
put("upsample", x=nchw_to_nhwc(x), dy=nchw_to_nhwc(dy), dx=nchw_to_nhwc(x.grad))

# ---- embedding: table [11, 6], ids [2, 7] with repeats (ids stored as f32, cast in the test)
table = leaf(11, 6)
ids = torch.tensor([[0, 3, 3, 10, 5, 3, 1], [10, 10, 2, 0, 7, 7, 3]])
y = F.embedding(ids, table)
dy = torch.randn_like(y)
y.backward(dy)
put("embedding", table=table, ids=ids.float(), dy=dy, dtable=table.grad)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/ops_grad")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "ops_grad.safetensors")
    save_file(out, path, metadata={"generator": "tests/reference/make_ops_grad_golden.py",
                                   "torch": torch.__version__})
    print(f"{path}: {len(out)} tensors, {os.path.getsize(path)} bytes")
