#!/usr/bin/env python3
"""LoRA DreamBooth golden (issue 18): one step's adapter gradients and 3 steps' updates, diffusers + PEFT.

    make_lora_golden.py [--preset sd1-tiny] [--rank 4] [--alpha 8]
        -> tests/golden/PRESET/lora_train.safetensors

Reads the committed golden model (tests/golden/PRESET/model) and the batch of its train.safetensors
(noisy latents, target, timesteps, input ids: prior preservation, 1 instance + 1 class sample), adds PEFT
LoRA adapters as diffusers' train_dreambooth_lora.py does (LoraConfig(r, lora_alpha, target_modules=
["to_k", "to_q", "to_v", "to_out.0"]) on the UNet; ["q_proj", "k_proj", "v_proj", "out_proj"] on the
text encoder, as --train_text_encoder), with the base weights frozen. PEFT initialises B = 0, which makes
every A gradient of the first step 0; to check both gradients the adapters are set to seeded random
values (A ~ U(-1/sqrt(K), 1/sqrt(K)) as PEFT's kaiming init, B ~ 0.02 N(0, 1)), stored as init.*. Then
3 steps: mse loss (instance + prior), backward, clip_grad_norm_(adapters, 1.0), AdamW(lr 1e-3, betas
(0.9, 0.999), eps 1e-8, weight decay 1e-2), as make_golden.py's full step.

Keys (our naming: "<component>.<module path>.lora_A.weight", the text encoder with "text_model."):
  init.K, grad.K (step 1, before clipping), step3.K; lora.step_losses, lora.step_grad_norms [3];
  lora.rank, lora.alpha (f32 scalars).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from peft import LoraConfig  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from diffusers import StableDiffusionPipeline  # noqa: E402

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
ROOT = Path(__file__).resolve().parents[2]


def adapter_params(module: torch.nn.Module, component: str) -> dict[str, torch.nn.Parameter]:
    """PEFT's parameters under our names: '<component>.<path>.lora_A.weight'."""
    out = {}
    for n, p in module.named_parameters():
        if ".lora_A." not in n and ".lora_B." not in n:
            continue
        n = n.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        if component == "text_encoder" and not n.startswith("text_model."):
            n = "text_model." + n  # transformers 5's CLIPTextModel has no text_model submodule
        out[f"{component}.{n}"] = p
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sd1-tiny")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    gdir = ROOT / "tests" / "golden" / args.preset
    pipe = StableDiffusionPipeline.from_pretrained(str(gdir / "model"), safety_checker=None, dtype=torch.float32)
    unet, te = pipe.unet, pipe.text_encoder
    tr = load_file(str(gdir / "train.safetensors"))
    noisy, target = tr["train.noisy_latents"], tr["train.target"]
    timesteps, ids = tr["train.timesteps"], tr["train.input_ids"]

    for m in (unet, te, pipe.vae):
        m.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.alpha, init_lora_weights="gaussian",
                                target_modules=UNET_TARGETS))
    te.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.alpha, init_lora_weights="gaussian",
                              target_modules=TE_TARGETS))
    unet.train()
    te.train()
    params = {**adapter_params(unet, "unet"), **adapter_params(te, "text_encoder")}
    assert params and all(p.requires_grad for p in params.values())
    gen = torch.Generator().manual_seed(args.seed)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if ".lora_A." in name:
                bound = 1.0 / p.shape[1] ** 0.5
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            out[f"init.{name}"] = p.detach().clone()
    plist = [params[n] for n in sorted(params)]
    opt = torch.optim.AdamW(plist, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, foreach=False,
                            fused=False)
    losses, norms = [], []
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        ehs = te(ids)[0]
        pred = unet(noisy, timesteps, ehs, return_dict=False)[0]
        pred_i, pred_c = torch.chunk(pred, 2, dim=0)
        tgt_i, tgt_c = torch.chunk(target, 2, dim=0)
        loss = F.mse_loss(pred_i.float(), tgt_i.float()) + F.mse_loss(pred_c.float(), tgt_c.float())
        loss.backward()
        if step == 0:
            for n in sorted(params):
                out[f"grad.{n}"] = params[n].grad.detach().clone()
        norms.append(torch.nn.utils.clip_grad_norm_(plist, max_norm=1.0).item())
        opt.step()
        losses.append(loss.item())
    for n in sorted(params):
        out[f"step3.{n}"] = params[n].detach().clone()
    out["lora.step_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["lora.step_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    out["lora.rank"] = torch.tensor(float(args.rank))
    out["lora.alpha"] = torch.tensor(float(args.alpha))
    for k, v in out.items():
        assert torch.isfinite(v).all(), k
    path = gdir / "lora_train.safetensors"
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata={"format": "pt"})
    print(f"wrote {path}: {len(params)} adapter tensors, losses {losses}, grad norms {norms}")


if __name__ == "__main__":
    main()
