#!/usr/bin/env python3
"""Dumps diffusers'/transformers' state-dict names and shapes for a preset's UNet, text encoder and VAE.

    check_registry.py PRESET.json [--out DIR]      prints counts; writes DIR/NAME-{unet,text_encoder,vae}.json

Models are built on the 'meta' device, so sd15/sd21 cost no memory. Each JSON is
{"count": N, "params": [[name, [shape...]], ...]} in state-dict order. The C++ tests
Registry.MatchesDiffusersTiny / MatchesDiffusersFullSize compare the registries with the dumps in
tests/fixtures/registry/ (regenerate: for p in sd1-tiny sd2-tiny sd15 sd21; do python
tests/reference/check_registry.py src/models/presets/$p.json --out tests/fixtures/registry; done).
transformers >= 5 lists CLIPTextModel's tensors without the "text_model." prefix; the test adds it.
"""
import argparse
import json
import os
import sys

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel


def dump(model):
    sd = model.state_dict()
    params = [[k, list(v.shape)] for k, v in sd.items()]
    count = sum(p.numel() for p in model.parameters())
    return {"count": count, "params": params}


def build(preset):
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(preset["unet"])
        vae = AutoencoderKL.from_config(preset["vae"])
        te_cfg = {k: v for k, v in preset["text_encoder"].items() if k not in ("architectures",)}
        te = CLIPTextModel(CLIPTextConfig(**te_cfg))
    return {"unet": dump(unet), "text_encoder": dump(te), "vae": dump(vae)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    preset = json.load(open(args.preset))
    name = os.path.splitext(os.path.basename(args.preset))[0]
    out = build(preset)
    for comp, d in out.items():
        print(f"{name} {comp}: {d['count']:,} parameters, {len(d['params'])} tensors")
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, f"{name}-{comp}.json"), "w") as f:
                json.dump(d, f, separators=(",", ":"))
                f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
