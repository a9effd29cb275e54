#!/usr/bin/env python3
"""Loads a LoRA weights file written by `dreambooth train --lora-rank` the way users do and checks it.

    check_lora_loads.py MODEL_DIR LORA_FILE [LOADED_FILE]

StableDiffusionPipeline.from_pretrained(MODEL_DIR).load_lora_weights(dir, weight_name=file), then
fuse_lora(lora_scale=1.0): every adapted Linear must now hold W + B A computed from the file's tensors (so
the names, the shapes and the scale are all read as we mean them: our files fold alpha / rank into B), the
number of adapted modules must equal the file's, and 2 denoising steps must give a finite image.
With LOADED_FILE (e.g. `export --format kohya-lora`'s rewrite of LORA_FILE), that file is the one loaded and
LORA_FILE gives the expected W + B A. Exit 1 with one `error:` line otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path

from pipeline_check import check_two_step_image, fail  # sets the environment first

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from diffusers import StableDiffusionPipeline  # noqa: E402


def module_weights(module: torch.nn.Module, strip_text_model: bool) -> dict[str, torch.Tensor]:
    out = {}
    for n, p in module.state_dict().items():
        if strip_text_model and n.startswith("text_model."):
            n = n[len("text_model."):]
        out[n] = p
    return out


def main() -> None:
    if len(sys.argv) not in (3, 4):
        fail("usage: check_lora_loads.py MODEL_DIR LORA_FILE [LOADED_FILE]")
    model_dir, lora = sys.argv[1], Path(sys.argv[2])
    loaded = Path(sys.argv[3]) if len(sys.argv) == 4 else lora
    file = load_file(str(lora))
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, dtype=torch.float32)
    before = {"unet": module_weights(pipe.unet, False), "text_encoder": module_weights(pipe.text_encoder, True)}
    before = {c: {k: v.clone() for k, v in w.items()} for c, w in before.items()}
    pipe.load_lora_weights(str(loaded.parent), weight_name=loaded.name)
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()
    after = {"unet": module_weights(pipe.unet, False), "text_encoder": module_weights(pipe.text_encoder, True)}
    checked = 0
    for key, a in file.items():
        if not key.endswith(".lora_A.weight"):
            continue
        component, path = key.split(".", 1)
        path = path[: -len(".lora_A.weight")]
        if component == "text_encoder" and path.startswith("text_model."):
            path = path[len("text_model."):]
        b = file[key.replace(".lora_A.weight", ".lora_B.weight")]
        w0 = before[component].get(path + ".weight")
        if w0 is None:
            fail(f"{key}: the model has no {path}.weight")
        want = w0 + b.float() @ a.float()
        got = after[component][path + ".weight"]
        err = ((got - want).norm() / want.norm()).item()
        if err > 1e-5 or (b.abs().max() > 0 and (got - w0).abs().max() == 0):
            fail(f"{component}.{path}: fused weight differs from W + B A by {err:.2e} of its norm")
        checked += 1
    if checked == 0:
        fail(f"{lora}: no lora_A weights")
    changed = sum(1 for c in after for k, v in after[c].items() if not torch.equal(v, before[c][k]))
    if changed != checked:
        fail(f"fuse_lora changed {changed} tensors, the file adapts {checked}")
    check_two_step_image(pipe)
    print(f"{loaded}: load_lora_weights + fuse_lora = W + B A of {lora.name} for {checked} modules: OK")


if __name__ == "__main__":
    main()
