#!/usr/bin/env python3
"""Golden gradients of the nn/ layers (NnBackward.* tests) from torch autograd, fp32 on CPU.

Each case builds the diffusers / transformers module itself with random parameters, runs forward and
backward on a random input and upstream gradient, and stores, under "<case>.":
  param.<state-dict name>   parameters in PyTorch layout (conv weights [O, I, kh, kw], as in files)
  grad.<state-dict name>    torch's parameter gradients, same layout
  x, y, dy, dx (+ context/dcontext, temb/dtemb)   activations in our layouts (NHWC, [B, T, C])
The C++ test loads the parameters through a ParamRegistry (which permutes conv weights) and compares
the gradient buffer against grad.* the same way. Run from the repo root:

    /opt/venvs/ref/bin/python tests/reference/make_nn_grad_golden.py [--out tests/golden/nn_grad]
"""
import argparse
import os

import torch
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

torch.manual_seed(0)
out = {}


def to_nhwc(t):
    return t.permute(0, 2, 3, 1) if t.dim() == 4 else t


@torch.no_grad()
def randomize(m):
    """Every parameter random: weights ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.1), biases N(0, 0.1)."""
    for name, p in m.named_parameters():
        if p.dim() >= 2:
            p.normal_(0, p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.normal_(1, 0.1)
        else:
            p.normal_(0, 0.1)


def run(case, module, inputs, forward):
    """inputs: name -> NCHW/[B, T, C] tensor; those ending in '!' get no gradient stored."""
    randomize(module)
    module.train()  # dropout p = 0 everywhere; train() only to be explicit
    leaves = {k.rstrip("!"): v.clone().requires_grad_(not k.endswith("!")) for k, v in inputs.items()}
    y = forward(module, **leaves)
    dy = torch.randn_like(y)
    y.backward(dy)
    put = lambda k, v: out.__setitem__(f"{case}.{k}", v.detach().to(torch.float32).contiguous().clone())
    for k, v in leaves.items():
        put(k, to_nhwc(v))
        if v.requires_grad:
            put("d" + k, to_nhwc(v.grad))
    put("y", to_nhwc(y))
    put("dy", to_nhwc(dy))
    for n, p in module.named_parameters():
        n = n.replace("Conv2d_0.", "conv.")  # Downsample2D registers its conv under both names
        put("param." + n, p)
        put("grad." + n, p.grad)


B = 2
# ---- UNet ResnetBlock2D (groups 4, eps 1e-5), with conv_shortcut (8 -> 16) and without (8 -> 8)
for case, cout in (("resnet", 16), ("resnet_same", 8)):
    run(case, ResnetBlock2D(in_channels=8, out_channels=cout, temb_channels=12, groups=4, eps=1e-5),
        {"x": torch.randn(B, 8, 6, 5), "temb": torch.randn(B, 12)},
        lambda m, x, temb: m(x, temb))

# ---- without time embedding and with output_scale_factor 2 (VAE-style ResnetBlock2D)
run("resnet_scaled", ResnetBlock2D(in_channels=8, out_channels=16, temb_channels=None, groups=4, eps=1e-6,
                                   output_scale_factor=2.0),
    {"x": torch.randn(B, 8, 6, 5)}, lambda m, x: m(x, None))

# ---- Downsample2D (conv 3x3 stride 2 pad 1) and Upsample2D (nearest 2x + conv 3x3)
run("downsample", Downsample2D(8, use_conv=True, out_channels=8, padding=1, name="conv"),
    {"x": torch.randn(B, 8, 6, 6)}, lambda m, x: m(x))
run("upsample", Upsample2D(8, use_conv=True, out_channels=8), {"x": torch.randn(B, 8, 3, 4)},
    lambda m, x: m(x))

# ---- Timesteps (sinusoidal, flip_sin_to_cos, shift 0) + TimestepEmbedding: linear_1, SiLU, linear_2.
# t gets no gradient (stored as "t").
run("timestep_embedding", TimestepEmbedding(in_channels=8, time_embed_dim=16),
    {"t!": torch.tensor([17.0, 503.0])}, lambda m, t: m(Timesteps(8, True, 0)(t)))

# ---- diffusers Attention (AttnProcessor: explicit softmax), self and cross; FeedForward (GEGLU)
run("attention_self", Attention(query_dim=16, heads=2, dim_head=8, processor=AttnProcessor()),
    {"x": torch.randn(B, 10, 16)}, lambda m, x: m(x))
run("attention_cross",
    Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8, processor=AttnProcessor()),
    {"x": torch.randn(B, 10, 16), "context": torch.randn(B, 7, 12)},
    lambda m, x, context: m(x, encoder_hidden_states=context))
run("feed_forward", FeedForward(16, activation_fn="geglu"), {"x": torch.randn(B, 10, 16)}, lambda m, x: m(x))

# ---- BasicTransformerBlock (layer_norm, self + cross attention, GEGLU) and Transformer2DModel
run("transformer_block",
    BasicTransformerBlock(16, 2, 8, cross_attention_dim=12, activation_fn="geglu", norm_type="layer_norm"),
    {"x": torch.randn(B, 10, 16), "context": torch.randn(B, 7, 12)},
    lambda m, x, context: m(x, encoder_hidden_states=context))
for case, linear in (("transformer_2d_conv", False), ("transformer_2d_linear", True)):
    run(case,
        Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, num_layers=1,
                           cross_attention_dim=12, norm_num_groups=4, use_linear_projection=linear),
        {"x": torch.randn(B, 16, 4, 3), "context": torch.randn(B, 7, 12)},
        lambda m, x, context: m(x, encoder_hidden_states=context, return_dict=False)[0])

# ---- CLIPEncoderLayer (causal self-attention), QuickGELU (SD 1.x) and GELU (SD 2.x)
for case, act in (("clip_layer", "quick_gelu"), ("clip_layer_gelu", "gelu")):
    cfg = CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, hidden_act=act,
                         layer_norm_eps=1e-5, attn_implementation="eager")
    T = 6
    mask = torch.full((T, T), float("-inf")).triu(1)[None, None].expand(B, 1, T, T)
    run(case, CLIPEncoderLayer(cfg), {"x": torch.randn(B, T, 16)}, lambda m, x: m(x, mask))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/nn_grad")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "nn_grad.safetensors")
    save_file(out, path, metadata={"generator": "tests/reference/make_nn_grad_golden.py",
                                   "torch": torch.__version__})
    print(f"{path}: {len(out)} tensors, {os.path.getsize(path)} bytes")
