#!/usr/bin/env python3
"""diffusers' StableDiffusionPipeline on the CPU, the baseline for bench/generate_cpu.cpp.

    /opt/venvs/ref/bin/python bench/generate_torch.py --model tests/golden/sd1-tiny/model
        [--images 8] [--steps 20] [--guidance 7.5] [--batch 1] [--scheduler NAME] [--threads 1]

fp32, torch.no_grad, output_type="np" (decode + postprocess to floats; the uint8 step is numpy's and
negligible). One untimed 1-image warm-up, then images / batch pipeline calls of num_images_per_prompt =
batch (the pipeline re-encodes the prompt per call; at tiny sizes that is part of what is measured).
Counts UNet evaluations (latent rows through the UNet) with a forward pre-hook. Prints one line.
"""
import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline)
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

diffusers_logging.disable_progress_bar()
transformers_logging.disable_progress_bar()

SAMPLERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "ddpm": (DDPMScheduler, {}),
}
NAMES = {"PNDMScheduler": "pndm", "DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler",
         "EulerAncestralDiscreteScheduler": "euler_ancestral", "DPMSolverMultistepScheduler": "dpmpp_2m",
         "DDPMScheduler": "ddpm"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tests/golden/sd1-tiny/model")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--scheduler", default="")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = StableDiffusionPipeline.from_pretrained(a.model, safety_checker=None, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if a.scheduler:
        cls, extra = SAMPLERS[a.scheduler]
        pipe.scheduler = cls.from_config(pipe.scheduler.config, **extra)
    name = a.scheduler or NAMES.get(type(pipe.scheduler).__name__, type(pipe.scheduler).__name__)
    evals = [0]
    pipe.unet.register_forward_pre_hook(lambda m, args: evals.__setitem__(0, evals[0] + args[0].shape[0]))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    gen = torch.Generator().manual_seed(0)

    def run(n):
        pipe("photo of a dog", num_inference_steps=a.steps, guidance_scale=a.guidance, num_images_per_prompt=n,
             height=size, width=size, generator=gen, output_type="np")

    with torch.no_grad():
        run(1)
        evals[0] = 0
        t0 = time.perf_counter()
        left = a.images
        while left > 0:
            run(min(a.batch, left))
            left -= a.batch
        s = time.perf_counter() - t0
    print(f"{'diffusers':10s} {'cpu':9s} {size}x{size} {name} {a.steps} steps g {a.guidance:.1f}, {a.images} images, "
          f"batch {a.batch}, {a.threads} thread(s): {s / a.images:.4f} s/image, {evals[0] / s:.1f} UNet evals/s",
          flush=True)


if __name__ == "__main__":
    main()
