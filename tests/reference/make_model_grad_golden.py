#!/usr/bin/env python3
"""Golden gradients of whole models (ModelBackward.* tests): a tiny SD 1.x-shaped UNet2DConditionModel and
CLIPTextModel with random parameters, forward + backward of a random upstream gradient, fp32 on CPU.

Stored under "unet." / "clip.": param.<state-dict name> and grad.<state-dict name> (PyTorch layout), the
inputs, y, dy and the encoder states' gradient, activations NHWC. The configs are repeated in
tests/unit/test_model_backward.cpp. Run from the repo root:

    /opt/venvs/ref/bin/python tests/reference/make_model_grad_golden.py [--out tests/golden/model_grad]
"""
import argparse
import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

torch.manual_seed(0)
out = {}

UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=12, attention_head_dim=2,
            norm_num_groups=4, norm_eps=1e-5)
CLIP = dict(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=0,
            eos_token_id=49, pad_token_id=49)


def put(k, v):
    out[k] = v.detach().to(torch.float32).contiguous().clone()


def nhwc(t):
    return t.permute(0, 2, 3, 1)


@torch.no_grad()
def randomize(m):
    """weights ~ N(0, 1/fan_in), norm scales 1 + N(0, 0.1), biases N(0, 0.1), embeddings N(0, 1)"""
    for name, p in m.named_parameters():
        if "embedding" in name:
            p.normal_(0, 1)
        elif p.dim() >= 2:
            p.normal_(0, p[0].numel() ** -0.5)
        elif name.endswith("weight"):
            p.normal_(1, 0.1)
        else:
            p.normal_(0, 0.1)


def store_params(prefix, m, name_prefix=""):
    for n, p in m.named_parameters():
        n = n if n.startswith(name_prefix) else name_prefix + n
        put(f"{prefix}.param.{n}", p)
        put(f"{prefix}.grad.{n}", p.grad)


unet = UNet2DConditionModel(**UNET)
randomize(unet)
sample = torch.randn(2, 4, 8, 8)
timesteps = torch.tensor([10.0, 700.0])
ehs = torch.randn(2, 5, 12, requires_grad=True)
y = unet(sample, timesteps, encoder_hidden_states=ehs).sample
dy = torch.randn_like(y)
y.backward(dy)
put("unet.sample", nhwc(sample))
put("unet.timesteps", timesteps)
put("unet.ehs", ehs)
put("unet.y", nhwc(y))
put("unet.dy", nhwc(dy))
put("unet.dehs", ehs.grad)
store_params("unet", unet)

clip = CLIPTextModel(CLIPTextConfig(**CLIP, attn_implementation="eager"))
randomize(clip)
ids = torch.tensor([[0, 7, 7, 49, 3, 49], [0, 12, 1, 49, 49, 49]])
y = clip(ids).last_hidden_state
dy = torch.randn_like(y)
y.backward(dy)
put("clip.ids", ids.float())
put("clip.y", y)
put("clip.dy", dy)
store_params("clip", clip, "text_model.")  # the state-dict names of the files (transformers 5 drops it)

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/model_grad")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model_grad.safetensors")
    save_file(out, path, metadata={"generator": "tests/reference/make_model_grad_golden.py",
                                   "torch": torch.__version__})
    n_unet = sum(p.numel() for p in unet.parameters())
    n_clip = sum(p.numel() for p in clip.parameters())
    print(f"{path}: {len(out)} tensors, {os.path.getsize(path)} bytes (unet {n_unet}, clip {n_clip} params)")
