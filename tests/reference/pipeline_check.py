"""What the check_*.py diffusers clients share. Import it before torch and diffusers: importing it makes
them offline, quiet and CPU-only (the variables are only set when unset)."""
from __future__ import annotations

import os
import sys

for _name, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("DIFFUSERS_VERBOSITY", "error"),
                      ("TRANSFORMERS_VERBOSITY", "error"), ("CUDA_VISIBLE_DEVICES", "")):
    os.environ.setdefault(_name, _value)


def fail(msg: str, file=None) -> None:
    """One `error:` line (stdout unless `file`), exit 1."""
    print(f"error: {msg}", file=file or sys.stdout)
    sys.exit(1)


def check_two_step_image(pipe) -> None:
    """2 denoising steps at the UNet's sample size must give a finite image."""
    import torch

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    img = pipe("photo of unqtkn dog", num_inference_steps=2, guidance_scale=7.5, height=size, width=size,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    if not torch.isfinite(torch.from_numpy(img)).all():
        fail("the image is not finite")
