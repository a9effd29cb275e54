#!/usr/bin/env python3
"""The DreamBooth training step of bench/step.cpp, done the way diffusers' train_dreambooth.py does it.

    python3 bench/step_torch.py [--preset sd15] [--resolution 512] [--device cuda|cpu] [--steps 3]
        [--warmup 2] [--gradient-checkpointing] [--model-tflop T] [--json FILE]

Same work as build/bench_step: UNet2DConditionModel and CLIPTextModel built from
src/models/presets/<preset>.json with random weights (diffusers/transformers default init), one instance
and one class sample at --resolution (latents resolution/8, in memory: no VAE, no data loading, as in
bench_step), fixed timesteps 417 and 802, prior preservation (loss = instance MSE + 1.0 * class MSE),
text encoder trained. As train_dreambooth.py with --mixed_precision bf16 --train_text_encoder
--with_prior_preservation: fp32 parameters, the forward and backward under torch.autocast(bfloat16),
attention through diffusers' default processor (AttnProcessor2_0: torch's scaled_dot_product_attention),
torch.optim.AdamW (lr 5e-6, betas 0.9/0.999, weight decay 1e-2, eps 1e-8) over both models' parameters,
clip_grad_norm_(max 1.0), zero_grad(set_to_none=False) after each step.

Prints the step time (mean and best of --steps after --warmup), samples/s (2 per step), peak memory
(torch.cuda.max_memory_allocated over the timed steps; peak RSS on the CPU), a bf16 GEMM peak measured
through torch.matmul, and, given --model-tflop (the model FLOPs per step that
`build/bench_step --count-only --json F` counts from the layer shapes), achieved TFLOP/s and MFU.
The CPU path is a smoke test (sd1-tiny at 64x64); figures that mean something come from a GPU.
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def public(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if not k.startswith("_") and k != "architectures"}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def pattern(n: int, mul: int) -> torch.Tensor:
    # bench_step's counter-based values in [-1, 1] (NHWC there; the layout does not matter for timing).
    i = torch.arange(n, dtype=torch.int64)
    return ((i * mul) % 2001).float() / 1000.0 - 1.0


def gemm_peak_tflops(device: str, n: int, reps: int) -> float:
    a = torch.full((n, n), 0.01, device=device, dtype=torch.bfloat16)
    b = torch.full((n, n), 0.02, device=device, dtype=torch.bfloat16)
    a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2.0 * n * n * n * reps / (time.perf_counter() - t0) / 1e12


def build(cfg: dict, device: str, checkpointing: bool):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel.from_config(public(cfg["unet"])).to(device).train()
    text = CLIPTextModel(CLIPTextConfig(**public(cfg["text_encoder"]))).to(device).train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
        text.gradient_checkpointing_enable()
    sched = DDPMScheduler.from_config(public(cfg["scheduler"]))
    return unet, text, sched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="sd15")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--model-tflop", type=float, default=0.0,
                    help="model FLOPs per step in TFLOP (bench_step --count-only --json: model_tflop_per_step)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = a.device
    if dev == "cuda" and not torch.cuda.is_available():
        print("step_torch: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    cfg = json.load(open(os.path.join(REPO, "src", "models", "presets", f"{a.preset}.json")))
    unet, text, sched = build(cfg, dev, a.gradient_checkpointing)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=5e-6, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    h = a.resolution // 8
    c_in = unet.config.in_channels
    latents = pattern(2 * c_in * h * h, 7919).view(2, c_in, h, h).to(dev)
    noise = pattern(2 * c_in * h * h, 104729).view(2, c_in, h, h).to(dev)
    vocab = text.config.vocab_size
    ids = ((torch.arange(154) * 31) % (vocab - 1)).view(2, 77).to(dev)
    timesteps = torch.tensor([417, 802], device=dev, dtype=torch.int64)

    def step():
        with torch.autocast(device_type=dev, dtype=torch.bfloat16):
            states = text(ids)[0]
            noisy = sched.add_noise(latents, noise, timesteps)
            pred = unet(noisy, timesteps, states, return_dict=False)[0]
        pred, pred_prior = torch.chunk(pred, 2, dim=0)
        target, target_prior = torch.chunk(noise, 2, dim=0)
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss = loss + 1.0 * F.mse_loss(pred_prior.float(), target_prior.float(), reduction="mean")
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)
        return loss.detach(), gnorm.detach()

    name = torch.cuda.get_device_name() if dev == "cuda" else "CPU"
    print(f"step_torch: {a.preset} at {a.resolution}x{a.resolution}, batch 1 instance + 1 class sample, UNet + "
          f"text encoder trained; torch {torch.__version__} on {name}; bf16 autocast, SDPA, AdamW"
          f"{', gradient checkpointing' if a.gradient_checkpointing else ''}", flush=True)
    for _ in range(a.warmup):
        step()
    sync(dev)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.steps):
        sync(dev)
        t0 = time.perf_counter()
        loss, gnorm = step()
        lv, gv = loss.item(), gnorm.item()  # the logged scalars: one host synchronisation, as in bench_step
        sync(dev)
        times.append(time.perf_counter() - t0)
        print(f"  step {i + 1}: {times[-1]:.4f} s  loss {lv:.5f}  grad_norm {gv:.4f}", flush=True)
    if dev == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
        mem = f"peak torch.cuda.max_memory_allocated during a step: {peak_mib:.1f} MiB " \
              f"(reserved {torch.cuda.max_memory_reserved() / 2**20:.1f} MiB)"
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        mem = f"peak RSS of the process: {peak_mib:.1f} MiB"
    mean, best = sum(times) / len(times), min(times)
    peak = gemm_peak_tflops(dev, 8192 if dev == "cuda" else 1024, 10 if dev == "cuda" else 2)
    achieved = a.model_tflop / mean if a.model_tflop > 0 else 0.0
    print(f"step time {mean:.4f} s mean, {best:.4f} s best ({a.steps} steps after {a.warmup} warm-up)"
          f"{', gradient checkpointing' if a.gradient_checkpointing else ''}")
    if a.model_tflop > 0:
        print(f"samples/s {2.0 / mean:.3f}   achieved {achieved:.2f} TFLOP/s (model FLOPs {a.model_tflop:.3f} TFLOP)"
              f"   GEMM peak {peak:.2f} TFLOP/s (bf16 torch.matmul)   MFU {100.0 * achieved / peak:.1f}%")
    else:
        print(f"samples/s {2.0 / mean:.3f}   GEMM peak {peak:.2f} TFLOP/s (bf16 torch.matmul)   "
              f"(no --model-tflop: achieved TFLOP/s and MFU not computed)")
    print(mem, flush=True)
    if a.json:
        out = {"preset": a.preset, "resolution": a.resolution, "backend": f"torch {torch.__version__} {dev}",
               "device_name": name, "gradient_checkpointing": a.gradient_checkpointing,
               "step_time_s_mean": mean, "step_time_s_best": best, "samples_per_s": 2.0 / mean,
               "gemm_peak_tflops": peak, "peak_mem_mib": peak_mib, "model_tflop_per_step": a.model_tflop,
               "achieved_tflops": achieved, "mfu": achieved / peak if achieved else None}
        with open(a.json, "w") as f:
            json.dump(out, f)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
