#!/usr/bin/env python3
"""Loads a folder written by `dreambooth init-model` with diffusers/transformers and checks it.

    check_model_folder.py DIR [--pipeline]

Each component loads with from_pretrained without missing/unexpected keys; with --pipeline,
StableDiffusionPipeline.from_pretrained(DIR) loads too. Prints parameter counts and dtypes.
"""
import argparse
import sys
import warnings

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--pipeline", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    ok = True
    for sub, cls in [("unet", UNet2DConditionModel), ("vae", AutoencoderKL), ("text_encoder", CLIPTextModel)]:
        kw = {"output_loading_info": True}
        model, info = cls.from_pretrained(args.dir, subfolder=sub, torch_dtype=None, **kw)
        bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")}
        n = sum(p.numel() for p in model.parameters())
        dtypes = sorted({str(p.dtype) for p in model.parameters()})
        print(f"{sub}: {type(model).__name__} {n:,} parameters {dtypes} {'OK' if not bad else bad}")
        ok &= not bad
    from diffusers import DDIMScheduler, PNDMScheduler  # noqa: F401
    from diffusers.schedulers import SchedulerMixin
    import diffusers
    import json, os
    sc = json.load(open(os.path.join(args.dir, "scheduler", "scheduler_config.json")))
    sched = getattr(diffusers, sc["_class_name"]).from_pretrained(args.dir, subfolder="scheduler")
    print(f"scheduler: {type(sched).__name__} prediction_type={sched.config.prediction_type}")
    if args.pipeline:
        from diffusers import StableDiffusionPipeline
        pipe = StableDiffusionPipeline.from_pretrained(args.dir, safety_checker=None)
        ids = pipe.tokenizer("photo of a dog", padding="max_length", max_length=pipe.tokenizer.model_max_length).input_ids
        print(f"pipeline: {type(pipe).__name__} tokenizer vocab {len(pipe.tokenizer)} ids[:6] {ids[:6]}")
        with torch.no_grad():
            emb = pipe.text_encoder(torch.tensor([ids]))[0]
        print(f"text embedding {tuple(emb.shape)} finite={bool(torch.isfinite(emb).all())}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
