#!/usr/bin/env python3
"""Check that a model folder is a working diffusers Stable Diffusion pipeline.

    check_pipeline_loads.py DIR [--steps 2] [--guidance 7.5] [--seed 0]

Loads DIR with StableDiffusionPipeline.from_pretrained(DIR, safety_checker=None) on the CPU in
float32, runs `--steps` denoising steps at the UNet's sample size (height = width =
unet.sample_size * vae_scale_factor) with classifier-free guidance, output_type="np", and checks
that the image has the expected shape and is finite.  Exits 0 and prints one "ok" line on success;
exits 1 with a one-line "error: ..." message otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from pipeline_check import fail as fail_to  # sets the environment first


def fail(msg: str) -> None:
    fail_to(msg, file=sys.stderr)


def check_weights(root: str, pipe) -> None:
    """from_pretrained only warns (and random-initialises) when a tensor is missing from a file; a
    writer bug must not pass silently, so compare every file tensor with the loaded module."""
    import torch
    from safetensors.torch import load_file

    for name in ("unet", "vae", "text_encoder"):
        folder = os.path.join(root, name)
        files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
        if not files:
            fail(f"{folder}: no .safetensors file")
        on_disk = {}
        for f in files:
            on_disk.update(load_file(os.path.join(folder, f)))
        if name == "text_encoder":  # transformers 5 drops the `text_model.` prefix on load
            on_disk = {k.removeprefix("text_model."): v for k, v in on_disk.items()}
        module = getattr(pipe, name)
        state = module.state_dict()
        missing = sorted(set(state) - set(on_disk))
        extra = sorted(set(on_disk) - set(state))
        if missing:
            fail(f"{folder}: {len(missing)} tensors missing from the file, e.g. {missing[:3]}")
        if extra:
            fail(f"{folder}: {len(extra)} unexpected tensors in the file, e.g. {extra[:3]}")
        for k, v in on_disk.items():
            if v.shape != state[k].shape:
                fail(f"{folder}: {k}: shape {tuple(v.shape)}, model expects {tuple(state[k].shape)}")
            if not torch.equal(v.to(state[k].dtype), state[k]):
                fail(f"{folder}: {k}: loaded values differ from the file")
            if not torch.isfinite(v.float()).all():
                fail(f"{folder}: {k}: non-finite values in the file")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="diffusers pipeline folder (model_index.json, unet/, vae/, ...)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="a photo of sks dog")
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(args.dir, "model_index.json")):
        fail(f"{args.dir}: no model_index.json (not a diffusers pipeline folder)")

    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        pipe = StableDiffusionPipeline.from_pretrained(args.dir, safety_checker=None, dtype=torch.float32)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        fail(f"{args.dir}: StableDiffusionPipeline.from_pretrained failed: {type(e).__name__}: {e}")
    pipe.set_progress_bar_config(disable=True)
    check_weights(args.dir, pipe)

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    try:
        gen = torch.Generator().manual_seed(args.seed)
        image = pipe(args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance,
                     height=size, width=size, generator=gen, output_type="np").images
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        fail(f"{args.dir}: inference failed: {type(e).__name__}: {e}")

    expected = (1, size, size, pipe.vae.config.out_channels)
    if tuple(image.shape) != expected:
        fail(f"{args.dir}: image shape {tuple(image.shape)}, expected {expected}")
    if not np.isfinite(image).all():
        fail(f"{args.dir}: image has {int((~np.isfinite(image)).sum())} non-finite values")
    print(f"ok: {args.dir}: {type(pipe.scheduler).__name__}, {args.steps} steps at {size}x{size}, "
          f"guidance {args.guidance}, image mean {float(image.mean()):.4f} std {float(image.std()):.4f}")


if __name__ == "__main__":
    main()
