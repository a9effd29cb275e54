#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention at the attention shapes of one SD 1.5 training step, for a
side-by-side with our kernels (build/bench_kernels, attention rows). Same FLOP conventions as
bench/cuda/kernels.cpp: forward 4 B H Tq Tk D, backward 8 B H Tq Tk D (recomputation not counted),
causal counts only the unmasked pairs. bf16, timed with CUDA events after warm-up, median of --reps.

  python3 bench/attention_torch.py [--device cuda] [--reps 20] [--json FILE]
  python3 bench/attention_torch.py --device cpu --smoke      # tiny shapes, checks the script runs

jobs/gpu_check.sh runs it on a lent GPU. Layout as our kernels: q [B, Tq, H*D] viewed as [B, H, Tq, D].
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def shapes(smoke):
    # (name, B, H, Tq, Tk, D, causal): SD 1.5 UNet at 64x64 latents, batch 2 (instance + class); CLIP 77.
    rows = []
    for t, d in ((4096, 40), (1024, 80), (256, 160), (64, 160)):
        if smoke:
            t = min(t, 64)
        rows.append((f"unet self d{d} T{t}", 2, 8, t, t, d, False))
        rows.append((f"unet cross d{d} T{t}x77", 2, 8, t, 77, d, False))
    rows.append(("clip causal d64 T77", 2, 12, 77, 77, 64, True))
    return rows


def flops(B, H, Tq, Tk, D, causal):
    pairs = Tq * Tk if not causal else sum(min(i + 1, Tk) for i in range(Tq))
    return 4.0 * B * H * pairs * D


def timer(device):
    if device == "cuda":
        def run(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            return a.elapsed_time(b) / 1e3
    else:
        def run(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 reps (any device)")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    reps = 2 if a.smoke else a.reps
    dtype = torch.bfloat16
    measure = timer(a.device)
    out = []
    print(f"torch {torch.__version__}, {a.device}, bf16, median of {reps}")
    print("| shape | B | H | Tq | Tk | D | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, B, H, Tq, Tk, D, causal in shapes(a.smoke):
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, generator=g).to(a.device, dtype).requires_grad_()
                   for T in (Tq, Tk, Tk))
        do = torch.randn(B, H, Tq, D, generator=g).to(a.device, dtype)

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        def fwd_bwd():
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            o.backward(do)

        for _ in range(a.warmup):
            fwd_bwd()
        tf = statistics.median(measure(fwd) for _ in range(reps))
        tfb = statistics.median(measure(fwd_bwd) for _ in range(reps))
        tb = max(tfb - tf, 1e-9)
        f = flops(B, H, Tq, Tk, D, causal)
        row = {"name": name, "B": B, "H": H, "Tq": Tq, "Tk": Tk, "D": D, "causal": causal,
               "fwd_ms": tf * 1e3, "fwd_tflops": f / tf / 1e12, "bwd_ms": tb * 1e3, "bwd_tflops": 2 * f / tb / 1e12}
        out.append(row)
        print(f"| {name} | {B} | {H} | {Tq} | {Tk} | {D} | {row['fwd_ms']:.3f} | {row['fwd_tflops']:.1f} | "
              f"{row['bwd_ms']:.3f} | {row['bwd_tflops']:.1f} |", flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"torch": torch.__version__, "device": a.device, "rows": out}, fh)


if __name__ == "__main__":
    main()
