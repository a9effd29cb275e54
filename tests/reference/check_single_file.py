#!/usr/bin/env python3
"""Loads a `dreambooth export --format single-file` checkpoint the way users do and checks every tensor.

    check_single_file.py FILE MODEL_DIR [LORA_FILE]

StableDiffusionPipeline.from_single_file(FILE, config=MODEL_DIR) must hold, for every parameter of the
UNet, VAE and text encoder, the folder's tensor (from_pretrained(MODEL_DIR); with LORA_FILE, after
load_lora_weights + fuse_lora) rounded to the file's dtype (the comparison is in float32 after rounding
both sides to that dtype; fused LoRA weights within 1e-6 of their norm as the merge order differs).
Then 2 denoising steps must give a finite image. Exit 1 with one `error:` line otherwise.
"""
from __future__ import annotations

import os
import sys

from pipeline_check import check_two_step_image, fail  # sets the environment first

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402

from diffusers import StableDiffusionPipeline  # noqa: E402


def main() -> None:
    if len(sys.argv) not in (3, 4):
        fail("usage: check_single_file.py FILE MODEL_DIR [LORA_FILE]")
    file, model_dir = sys.argv[1], sys.argv[2]
    with safe_open(file, "pt") as f:
        dtype = f.get_tensor(next(iter(f.keys()))).dtype
    ref = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, dtype=torch.float32)
    if len(sys.argv) == 4:
        lora = sys.argv[3]
        ref.load_lora_weights(os.path.dirname(os.path.abspath(lora)), weight_name=os.path.basename(lora))
        ref.fuse_lora(lora_scale=1.0)
        ref.unload_lora_weights()
    pipe = StableDiffusionPipeline.from_single_file(file, config=model_dir, safety_checker=None,
                                                    torch_dtype=torch.float32)
    checked = 0
    for comp in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, comp).state_dict(), getattr(ref, comp).state_dict()
        for k, want in b.items():
            if k.endswith("position_ids"):
                continue
            if k not in a:
                fail(f"{comp}.{k}: not loaded from the single file")
            want = want.to(dtype).float()
            got = a[k].float()
            if got.shape != want.shape:
                fail(f"{comp}.{k}: shape {tuple(got.shape)} vs {tuple(want.shape)}")
            err = ((got - want).norm() / want.norm().clamp_min(1e-30)).item()
            if err > (1e-6 if dtype == torch.float32 else 1e-2 if len(sys.argv) == 4 else 0):
                fail(f"{comp}.{k}: differs from the folder's tensor by {err:.2e} of its norm")
            checked += 1
    check_two_step_image(pipe)
    print(f"{file}: from_single_file(config={model_dir}) holds the folder's {checked} tensors ({dtype}): OK")


if __name__ == "__main__":
    main()
