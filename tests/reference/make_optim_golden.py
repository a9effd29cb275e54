#!/usr/bin/env python3
"""Golden data for the optimizer pieces: torch.optim.AdamW steps with clip_grad_norm_, and diffusers'
learning-rate schedules. Writes tests/golden/optim/optim.json (float32 values as Python floats).

    tests/reference/.venv/bin/python tests/reference/make_optim_golden.py --out tests/golden/optim
"""
import argparse
import json
import os

import torch
from diffusers.optimization import get_scheduler


def adamw_case(seed, n, steps, lr, wd, max_norm, scale):
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=g, dtype=torch.float32)
    p0 = p.clone()
    param = torch.nn.Parameter(p)
    opt = torch.optim.AdamW([param], lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, foreach=False)
    grads, norms, coefs = [], [], []
    for _ in range(steps):
        grad = torch.randn(n, generator=g, dtype=torch.float32) * scale
        grads.append(grad.tolist())
        param.grad = grad.clone()
        total = torch.nn.utils.clip_grad_norm_([param], max_norm=max_norm)
        norms.append(float(total))
        coefs.append(float(torch.clamp(max_norm / (total + 1e-6), max=1.0)))
        opt.step()
        opt.zero_grad()
    st = opt.state[param]
    return {"seed": seed, "n": n, "lr": lr, "weight_decay": wd, "max_norm": max_norm, "param0": p0.tolist(),
            "grads": grads, "grad_norms": norms, "clip_coefs": coefs, "param": param.detach().tolist(),
            "exp_avg": st["exp_avg"].tolist(), "exp_avg_sq": st["exp_avg_sq"].tolist()}


def lr_case(name, warmup, total, base_lr):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=base_lr)
    sched = get_scheduler(name, optimizer=opt, num_warmup_steps=warmup, num_training_steps=total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return {"name": name, "warmup": warmup, "total": total, "base_lr": base_lr, "lrs": lrs}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="tests/golden/optim")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = {
        "torch": torch.__version__,
        # small grads: the clip never triggers (coef 1); large grads: it does every step
        "adamw": [adamw_case(0, 1000, 3, 1e-3, 1e-2, 1.0, 0.001), adamw_case(1, 777, 3, 5e-6, 1e-2, 1.0, 1.0),
                  adamw_case(2, 64, 5, 1e-2, 0.0, 1.0, 0.5)],
        "lr": [lr_case(n, w, 20, 5e-6) for n in ("constant", "constant_with_warmup", "linear", "cosine")
               for w in (0, 5)],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "optim.json"), "w") as f:
        json.dump(data, f)
    print("wrote", os.path.join(args.out, "optim.json"))


if __name__ == "__main__":
    main()
