#!/usr/bin/env python3
"""Golden data for `dreambooth generate`: diffusers' StableDiffusionPipeline end to end (text encoder,
classifier-free guidance, scheduler loop, VAE decode, uint8 postprocess) on the tiny golden models.

    /opt/venvs/ref/bin/python tests/reference/make_generate_golden.py            # both presets
    /opt/venvs/ref/bin/python tests/reference/make_generate_golden.py --preset sd1-tiny

Reads tests/golden/<preset>/model and writes tests/golden/generate/<preset>.safetensors.

For every case the pipeline runs
    StableDiffusionPipeline.from_pretrained(model, safety_checker=None)      (float32, CPU)
    pipe.scheduler = <Class>.from_config(pipe.scheduler.config[, use_karras_sigmas=True])
    pipe(prompt, negative_prompt=..., height=H, width=W, num_inference_steps=5, guidance_scale=g,
         num_images_per_prompt=2, latents=init_latents, output_type="latent")
and decodes the final latents exactly as the pipeline's own tail does:
    image = vae.decode(latents / scaling_factor); image_processor.postprocess(image, "np")
    uint8 = (np_image * 255).round().astype(uint8)                    (VaeImageProcessor.numpy_to_pil)

Stochastic schedulers (euler_ancestral, ddpm) draw their noise through randn_tensor inside the scheduler
module; it is replaced by a recorder (one torch.Generator per case) and every draw is stored in order,
so the C++ test can replay it through a ListNoiseSource.

Tensors in the file (PyTorch layouts; B = 2 images, C = latent channels, h = w = H / vae_scale_factor):
    init_latents          f32 [B, C, h, w]   N(0,1), torch.Generator().manual_seed(1234); the pipeline
                                             multiplies them by init_noise_sigma itself
    prompt_embeds         f32 [2, 77, D]     text_encoder output: row 0 negative prompt, row 1 prompt
    <case>.timesteps      f32 [n]            the scheduler's timesteps (float)
    <case>.latents        f32 [B, C, h, w]   final latents (output_type="latent")
    <case>.image          u8  [B, H, W, 3]   decoded image, NHWC, as the PIL image holds it
    <case>.noise          f32 [k, B, C, h, w] the scheduler's noise draws in order (stochastic only)
Metadata: one key, "generate", a JSON object: cases (list of {name, sampler, guidance, negative_prompt or
null, steps, noise_draws}), prompt, height, width, num_images, model.
"""
import argparse
import importlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
)
from safetensors.torch import save_file

PROMPT = "a photo of sks dog in a bucket"
NEGATIVE = "blurry, low quality"
STEPS = 5
NUM_IMAGES = 2

# our sampler name -> (diffusers class, from_config extras)
SAMPLERS = {
    "pndm": (PNDMScheduler, {}),
    "ddim": (DDIMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "ddpm": (DDPMScheduler, {}),
}
# (case name, sampler, guidance, negative prompt)
CASES = [(name, name, 7.5, NEGATIVE) for name in SAMPLERS] + [
    ("ddim_no_negative", "ddim", 7.5, None),  # unconditional half from "" (diffusers' default)
    ("pndm_guidance1", "pndm", 1.0, None),  # guidance <= 1: no classifier-free guidance, one half
]
SCHED_MODULES = [
    "scheduling_ddpm",
    "scheduling_ddim",
    "scheduling_pndm",
    "scheduling_euler_discrete",
    "scheduling_euler_ancestral_discrete",
    "scheduling_dpmsolver_multistep",
]


class NoiseRecorder:
    """Replaces randn_tensor in the scheduler modules; draws from one generator and records."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = torch.randn(shape, generator=self.gen, dtype=torch.float32)
        self.drawn.append(n.clone())
        return n.to(dtype or torch.float32)

    def __enter__(self):
        self.saved = {}
        for m in SCHED_MODULES:
            mod = importlib.import_module("diffusers.schedulers." + m)
            if hasattr(mod, "randn_tensor"):
                self.saved[m] = mod.randn_tensor
                mod.randn_tensor = self
        return self

    def __exit__(self, *exc):
        for m, f in self.saved.items():
            importlib.import_module("diffusers.schedulers." + m).randn_tensor = f


def make(preset, root):
    model = os.path.join(root, preset, "model")
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_config = dict(pipe.scheduler.config)
    f = pipe.vae_scale_factor
    size = pipe.unet.config.sample_size * f
    c = pipe.unet.config.in_channels
    init = torch.randn(NUM_IMAGES, c, size // f, size // f, generator=torch.Generator().manual_seed(1234))
    out = {"init_latents": init.contiguous()}
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt=NEGATIVE)
    out["prompt_embeds"] = torch.cat([uncond, cond]).contiguous()
    meta_cases = []
    for k, (case, sampler, guidance, negative) in enumerate(CASES):
        cls, extra = SAMPLERS[sampler]
        pipe.scheduler = cls.from_config(base_config, **extra)
        with NoiseRecorder(100 + k) as rec, torch.no_grad():
            latents = pipe(
                PROMPT,
                negative_prompt=negative,
                height=size,
                width=size,
                num_inference_steps=STEPS,
                guidance_scale=guidance,
                num_images_per_prompt=NUM_IMAGES,
                latents=init.clone(),
                output_type="latent",
            ).images
            image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(image, output_type="np", do_denormalize=[True] * NUM_IMAGES)
        u8 = (image * 255).round().astype("uint8")  # VaeImageProcessor.numpy_to_pil
        out[f"{case}.timesteps"] = pipe.scheduler.timesteps.to(torch.float32).contiguous()
        out[f"{case}.latents"] = latents.contiguous()
        out[f"{case}.image"] = torch.from_numpy(np.ascontiguousarray(u8))
        if rec.drawn:
            out[f"{case}.noise"] = torch.stack(rec.drawn).contiguous()
        assert torch.isfinite(latents).all(), case
        meta_cases.append({"name": case, "sampler": sampler, "guidance": guidance, "negative_prompt": negative,
                           "steps": STEPS, "noise_draws": len(rec.drawn)})
        print(f"  {preset} {case:18s} latents std {latents.std():.4f} image mean {u8.mean():6.2f} "
              f"noise draws {len(rec.drawn)}")
    # One metadata key: safetensors writes metadata in hash-map order, so several keys would make the
    # file bytes differ from run to run.
    meta = {"generate": json.dumps({"cases": meta_cases, "prompt": PROMPT, "height": size, "width": size,
                                    "model": f"tests/golden/{preset}/model", "num_images": NUM_IMAGES},
                                   sort_keys=True)}
    return out, meta


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", action="append", help="sd1-tiny, sd2-tiny (default both)")
    ap.add_argument("--golden", default="tests/golden")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    out_dir = os.path.join(args.golden, "generate")
    os.makedirs(out_dir, exist_ok=True)
    for preset in args.preset or ["sd1-tiny", "sd2-tiny"]:
        tensors, meta = make(preset, args.golden)
        path = os.path.join(out_dir, preset + ".safetensors")
        save_file(tensors, path + ".tmp", metadata=meta)
        os.replace(path + ".tmp", path)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
