#!/usr/bin/env python3
"""Golden data for the diffusion layer: diffusers' schedulers run on a synthetic "model", and the
training-side schedule pieces (betas, alphas_cumprod, add_noise, get_velocity, compute_snr, min-SNR
weights). Writes tests/golden/samplers/{samplers,training}.json (float32 values written as the
shortest decimal that reads back to the same float32).

    /opt/venvs/ref/bin/python tests/reference/make_sampler_golden.py --out tests/golden/samplers

The synthetic model, which tests/unit/test_sampler.cpp computes the same way:

    F(m, t) = float32(0.5 * tanh(double(m)) + 0.01 * (double(t) / 1000))      elementwise

Each sampler case runs the StableDiffusionPipeline loop:
    x = init * init_scale * init_noise_sigma;  for t in timesteps: x = step(F(scale_model_input(x, t), t), t, x)
Noise drawn by stochastic schedulers (randn_tensor) is recorded in draw order and stored, so the C++
side can replay it through a list noise source.
"""
import argparse
import importlib
import json
import os

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)
from diffusers.training_utils import compute_snr

# scheduler_config.json of SD 1.5 (epsilon) and SD 2.1 768 (v-prediction); no timestep_spacing key, so
# each class falls back to its own default (leading for PNDM/DDIM/DDPM, linspace for Euler/DPM).
SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}
SD21V = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}

# our sampler name -> (diffusers class, extra config, default spacing of that class)
SAMPLERS = {
    "pndm": (PNDMScheduler, {}, "leading"),
    "ddim": (DDIMScheduler, {}, "leading"),
    "euler": (EulerDiscreteScheduler, {}, "linspace"),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}, "linspace"),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {}, "linspace"),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, "linspace"),
    "ddpm": (DDPMScheduler, {}, "leading"),
}
SCHED_MODULES = [
    "scheduling_ddpm",
    "scheduling_ddim",
    "scheduling_pndm",
    "scheduling_euler_discrete",
    "scheduling_euler_ancestral_discrete",
    "scheduling_dpmsolver_multistep",
]


def f32s(t):
    a = np.asarray(t.detach().cpu() if isinstance(t, torch.Tensor) else t, dtype=np.float32).reshape(-1)
    return [float(str(v)) for v in a]  # shortest repr that round-trips float32


class NoiseRecorder:
    """Replaces randn_tensor in the scheduler modules; draws from one generator and records."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn = []

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = torch.randn(shape, generator=self.gen, dtype=torch.float32)
        self.drawn.append(n.clone())
        return n.to(dtype or torch.float32)

    def install(self):
        self.saved = {}
        for m in SCHED_MODULES:
            mod = importlib.import_module("diffusers.schedulers." + m)
            if hasattr(mod, "randn_tensor"):
                self.saved[m] = mod.randn_tensor
                mod.randn_tensor = self

    def uninstall(self):
        for m, f in self.saved.items():
            importlib.import_module("diffusers.schedulers." + m).randn_tensor = f


def model(m, t):
    t = float(t)
    return (0.5 * torch.tanh(m.double()) + 0.01 * (t / 1000.0)).float()


def sampler_case(name, base_name, base, spacing, steps, init, eta=0.0, seed=0, init_scale=1.0, more=None):
    cls, extra, _ = SAMPLERS[name]
    cfg = dict(base)
    if spacing is not None:
        cfg["timestep_spacing"] = spacing
    cfg.update(extra)
    cfg.update(more or {})
    sched = cls.from_config(cfg)
    sched.set_timesteps(steps)
    rec = NoiseRecorder(seed)
    rec.install()
    try:
        timesteps = [float(t) for t in sched.timesteps]
        init_sigma = sched.init_noise_sigma
        x = (init * init_scale) * init_sigma
        kwargs = {"eta": eta} if cls is DDIMScheduler else {}
        for t in sched.timesteps:
            m = sched.scale_model_input(x, t)
            x = sched.step(model(m, t), t, x, **kwargs, return_dict=False)[0]
    finally:
        rec.uninstall()
    case = {
        "name": f"{name}/{base_name}/{spacing or 'default'}/{steps}" + (f"/eta{eta}" if eta else "")
        + "".join(f"/{k}={v}" for k, v in (more or {}).items()),
        "sampler": name,
        "diffusers_class": cls.__name__,
        "config": cfg,
        "steps": steps,
        "eta": eta,
        "init_scale": init_scale,
        "timesteps": timesteps,
        "init_noise_sigma": float(init_sigma),
        "final": f32s(x),
        "noise": [f32s(n) for n in rec.drawn],
    }
    if hasattr(sched, "sigmas") and name not in ("pndm", "ddim", "ddpm"):
        case["sigmas"] = f32s(sched.sigmas)
    return case


def samplers_golden():
    g = torch.Generator().manual_seed(1234)
    init = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float32)
    cases = []
    for name, (_, _, default_spacing) in SAMPLERS.items():
        other = "linspace" if default_spacing == "leading" else "leading"
        for base_name, base in (("sd15", SD15), ("sd21v", SD21V)):
            for spacing in (None, "trailing", other):
                cases.append(sampler_case(name, base_name, base, spacing, 5, init))
            if name in ("pndm", "ddim"):
                cases.append(sampler_case(name, base_name, base, None, 50, init))
            if name in ("dpmpp_2m", "dpmpp_2m_karras", "euler"):
                cases.append(sampler_case(name, base_name, base, None, 20, init))
    for spacing in (None, "trailing"):
        cases.append(sampler_case("ddim", "sd15", SD15, spacing, 5, init, eta=1.0, seed=7))
    cases.append(sampler_case("ddim", "sd21v", SD21V, None, 10, init, eta=0.5, seed=8))
    # clip_sample on (DDIM / DDPM read it; SD pipelines force it off, but the scheduler honours it)
    clip = dict(SD15, clip_sample=True)
    cases.append(sampler_case("ddim", "sd15clip", clip, None, 5, init, init_scale=3.0))
    cases.append(sampler_case("ddpm", "sd15clip", clip, None, 5, init, init_scale=3.0, seed=3))
    # Less common branches: Euler with Karras sigmas, DPM-Solver++ order 3 / heun / sigma_min final,
    # squaredcos betas (Karras timesteps truncated, not rounded), DDPM fixed_large.
    for base_name, base in (("sd15", SD15), ("sd21v", SD21V)):
        cases.append(sampler_case("euler", base_name, base, None, 12, init, more={"use_karras_sigmas": True}))
        cases.append(sampler_case("dpmpp_2m", base_name, base, None, 20, init, more={"solver_order": 3}))
        cases.append(sampler_case("dpmpp_2m", base_name, base, None, 8, init, more={"solver_order": 3}))
        cases.append(sampler_case("dpmpp_2m", base_name, base, None, 10, init, more={"solver_type": "heun"}))
        cases.append(sampler_case("dpmpp_2m", base_name, base, None, 10, init,
                                  more={"final_sigmas_type": "sigma_min", "lower_order_final": False}))
        cases.append(sampler_case("dpmpp_2m_karras", base_name, base, None, 16, init,
                                  more={"final_sigmas_type": "sigma_min"}))
        cases.append(sampler_case("dpmpp_2m", base_name, base, None, 6, init, more={"euler_at_final": True}))
    cos = dict(SD15, beta_schedule="squaredcos_cap_v2")
    for name in SAMPLERS:  # (dpmpp_2m_karras: diffusers fails here, see make_sampler_golden notes below)
        if name != "dpmpp_2m_karras":
            cases.append(sampler_case(name, "sd15cos", cos, None, 8, init, seed=5))
    cases.append(sampler_case("ddpm", "sd15", SD15, None, 6, init, seed=6, more={"variance_type": "fixed_large"}))
    tables = []
    for name, (cls, extra, _) in SAMPLERS.items():
        for spacing in ("leading", "trailing", "linspace"):
            for n in (1, 2, 3, 7, 13, 25, 50, 99):
                cfg = dict(SD15, timestep_spacing=spacing, **extra)
                sched = cls.from_config(cfg)
                sched.set_timesteps(n)
                row = {"sampler": name, "config": cfg, "steps": n, "timesteps": [float(t) for t in sched.timesteps]}
                if name not in ("pndm", "ddim", "ddpm"):
                    row["sigmas"] = f32s(sched.sigmas)
                    row["init_noise_sigma"] = float(sched.init_noise_sigma)
                tables.append(row)
        if name == "euler":
            for n in (1, 2, 7, 25, 99):
                cfg = dict(SD15, use_karras_sigmas=True)
                sched = cls.from_config(cfg)
                sched.set_timesteps(n)
                tables.append({"sampler": name, "config": cfg, "steps": n, "sigmas": f32s(sched.sigmas),
                               "timesteps": [float(t) for t in sched.timesteps],
                               "init_noise_sigma": float(sched.init_noise_sigma)})
    return {
        "timestep_tables": tables,
        "model": "F(m, t) = float32(0.5 * tanh(double(m)) + 0.01 * (double(t) / 1000))",
        "shape": [1, 4, 8, 8],
        "init": f32s(init),
        "cases": cases,
    }


def training_golden():
    out = {"schedules": [], "add_noise": [], "snr": []}
    for sch, b0, b1 in (("scaled_linear", 0.00085, 0.012), ("linear", 0.0001, 0.02), ("squaredcos_cap_v2", 0.0001, 0.02)):
        s = DDPMScheduler(num_train_timesteps=1000, beta_start=b0, beta_end=b1, beta_schedule=sch)
        out["schedules"].append(
            {"beta_schedule": sch, "beta_start": b0, "beta_end": b1, "num_train_timesteps": 1000,
             "betas": f32s(s.betas), "alphas_cumprod": f32s(s.alphas_cumprod)})
    s = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = torch.Generator().manual_seed(99)
    x = torch.randn(4, 4, 4, 4, generator=g)
    eps = torch.randn(4, 4, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 999], dtype=torch.int64)
    out["add_noise"].append({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                             "shape": [4, 4, 4, 4], "timesteps": t.tolist(), "x": f32s(x), "eps": f32s(eps),
                             "noisy": f32s(s.add_noise(x, eps, t)), "velocity": f32s(s.get_velocity(x, eps, t))})
    ts = torch.tensor([0, 1, 10, 100, 250, 500, 750, 999], dtype=torch.int64)
    snr = compute_snr(s, ts)
    for gamma in (1.0, 5.0):
        # train_dreambooth.py: base = min(snr, gamma) / snr; v-prediction adds 1 (floor of one)
        base = torch.stack([snr, gamma * torch.ones_like(ts)], dim=1).min(dim=1)[0] / snr
        out["snr"].append({"timesteps": ts.tolist(), "gamma": gamma, "snr": f32s(snr),
                           "weights_epsilon": f32s(base), "weights_v_prediction": f32s(base + 1)})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/golden/samplers")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for fname, data in (("samplers.json", samplers_golden()), ("training.json", training_golden())):
        path = os.path.join(args.out, fname)
        with open(path + ".tmp", "w") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(path + ".tmp", path)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
