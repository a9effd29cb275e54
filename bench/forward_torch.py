#!/usr/bin/env python3
"""Forward-pass timing of diffusers/transformers on the CPU, the baseline for bench/forward_cpu.cpp.

    /opt/venvs/ref/bin/python bench/forward_torch.py --preset sd15 --model unet [--threads 2]
        [--reps N] [--latent 64] [--image 512] [--batch 1]

Random-init models from src/models/presets/<preset>.json (diffusers' default init), fp32, NCHW,
torch.no_grad(). Prints one line per model: best seconds of reps (after one warm-up when reps > 1)
and the process's peak RSS; run one model per process for a per-model peak.
"""
import argparse
import json
import resource
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 * 1024.0)  # KiB on Linux


def public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}


def time_best(reps: int, fn) -> float:
    if reps > 1:
        fn()
    best = float("inf")
    for _ in range(max(reps, 1)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def report(preset: str, model: str, shape: str, s: float, threads: int) -> None:
    print(f"{preset:<10} {model:<11} {shape:<26} {s:9.4f} s  peak RSS {peak_rss_gib():6.2f} GiB  threads {threads}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="sd15")
    ap.add_argument("--model", default="all", choices=["all", "clip", "unet", "vae-encode", "vae-decode"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--image", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = json.load(open(f"src/models/presets/{a.preset}.json"))
    every = a.model == "all"
    with torch.no_grad():
        if every or a.model == "clip":
            m = CLIPTextModel(CLIPTextConfig(**public(cfg["text_encoder"]))).eval()
            ids = (torch.arange(a.batch * 77) * 7919 % m.config.vocab_size).view(a.batch, 77)
            report(a.preset, "clip", f"ids [{a.batch}, 77]", time_best(a.reps, lambda: m(ids)), a.threads)
            del m
        if every or a.model == "unet":
            m = UNet2DConditionModel.from_config(public(cfg["unet"])).eval()
            c = m.config
            x = torch.rand(a.batch, c.in_channels, a.latent, a.latent) * 2 - 1
            t = torch.full((a.batch,), 500, dtype=torch.int64)
            ehs = torch.rand(a.batch, 77, c.cross_attention_dim) * 2 - 1
            s = time_best(a.reps, lambda: m(x, t, encoder_hidden_states=ehs))
            report(a.preset, "unet", f"latents {a.latent}x{a.latent}", s, a.threads)
            del m
        if every or a.model in ("vae-encode", "vae-decode"):
            m = AutoencoderKL.from_config(public(cfg["vae"])).eval()
            c = m.config
            sz = f"image {a.image}x{a.image}"
            if every or a.model == "vae-encode":
                img = torch.rand(a.batch, c.in_channels, a.image, a.image) * 2 - 1
                s = time_best(a.reps, lambda: m.quant_conv(m.encoder(img)))
                report(a.preset, "vae-encode", sz, s, a.threads)
            if every or a.model == "vae-decode":
                f = 2 ** (len(c.block_out_channels) - 1)
                z = torch.rand(a.batch, c.latent_channels, a.image // f, a.image // f) * 2 - 1
                s = time_best(a.reps, lambda: m.decode(z))
                report(a.preset, "vae-decode", sz, s, a.threads)


if __name__ == "__main__":
    main()
