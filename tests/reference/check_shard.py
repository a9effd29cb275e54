#!/usr/bin/env python3
"""Checks a dreambooth HDF5 shard against schema v1 (docs/DATA_FORMAT.md) with h5py; prints a summary.

    /opt/venvs/ref/bin/python tests/reference/check_shard.py SHARD [SHARD ...]

Exit status 0 when every shard conforms, 1 otherwise (each problem printed on its own line).
"""
import re
import sys

import h5py
import numpy as np

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check(path):
    problems = []

    def need(cond, msg):
        if not cond:
            problems.append(msg)
        return cond

    with h5py.File(path, "r", locking=False) as f:
        a = dict(f.attrs)
        print(f"{path}")
        for k in sorted(a):
            v = a[k]
            v = v.decode() if isinstance(v, bytes) else v
            print(f"  @{k} = {v!r}")
        if not need(a.get("schema_version") == 1, f"schema_version is {a.get('schema_version')!r}, expected 1"):
            return problems
        for k in ("resolution", "crop", "prompt", "tokenizer_fingerprint", "vae_fingerprint", "created_by",
                  "num_samples"):
            need(k in a, f"missing attribute {k}")
        for k in ("crop", "prompt", "tokenizer_fingerprint", "vae_fingerprint", "created_by"):
            need(isinstance(a.get(k), str), f"attribute {k} is not a UTF-8 string ({type(a.get(k)).__name__})")
        n, r = int(a.get("num_samples", -1)), int(a.get("resolution", -1))
        need(a.get("crop") in ("center", "random"), f"crop is {a.get('crop')!r}")
        need(a.get("created_by", "").startswith("dreambooth"), "created_by does not start with 'dreambooth'")
        need(HEX64.match(a.get("tokenizer_fingerprint", "")) is not None, "tokenizer_fingerprint is not 64 hex")
        for name, ds in f.items():
            print(f"  /{name:14s} {ds.dtype!s:8s} {ds.shape} chunks={ds.chunks}")
        expect = {"pixels": (np.uint8, (n, r, r, 3)), "prompt_ids": (np.int32, (n, 77))}
        for name, (dt, shape) in expect.items():
            if need(name in f, f"missing dataset {name}"):
                need(f[name].dtype == dt, f"{name} dtype {f[name].dtype}, expected {np.dtype(dt)}")
                need(f[name].shape == shape, f"{name} shape {f[name].shape}, expected {shape}")
                need(f[name].chunks == (1,) + shape[1:], f"{name} chunks {f[name].chunks}, expected one sample")
        has_mean, has_logvar = "latent_mean" in f, "latent_logvar" in f
        need(has_mean == has_logvar, "latent_mean and latent_logvar must come together")
        if has_mean and has_logvar:
            m, lv = f["latent_mean"], f["latent_logvar"]
            need(m.dtype == np.float32 and lv.dtype == np.float32, "latents are not float32")
            need(m.ndim == 4 and m.shape[0] == n and m.shape[3] == 4, f"latent_mean shape {m.shape}")
            need(lv.shape == m.shape, f"latent_logvar shape {lv.shape} != latent_mean {m.shape}")
            need(HEX64.match(a.get("vae_fingerprint", "")) is not None, "latents present but vae_fingerprint not hex")
        else:
            need(a.get("vae_fingerprint") == "", "no latents but vae_fingerprint is set")
        if need("source_path" in f, "missing dataset source_path"):
            sp = f["source_path"]
            need(h5py.check_string_dtype(sp.dtype) is not None and h5py.check_string_dtype(sp.dtype).length is None
                 and h5py.check_string_dtype(sp.dtype).encoding == "utf-8",
                 f"source_path is not variable-length UTF-8 ({sp.dtype})")
            need(sp.shape == (n,), f"source_path shape {sp.shape}")
            paths = [p for p in sp.asstr()[()]] if n else []
            if paths:
                print(f"  source_path[0] = {paths[0]!r}")
        if need("sha256" in f, "missing dataset sha256"):
            sh = f["sha256"]
            info = h5py.check_string_dtype(sh.dtype)
            need(info is not None and info.length == 64, f"sha256 is not a fixed 64-byte string ({sh.dtype})")
            need(sh.shape == (n,), f"sha256 shape {sh.shape}")
            bad = [h for h in sh[()] if HEX64.match(h.decode("ascii", "replace")) is None]
            need(not bad, f"{len(bad)} sha256 entries are not 64 lowercase hex")
            if n:
                print(f"  sha256[0] = {sh[0].decode()}")
        if n and "pixels" in f:
            px = f["pixels"][0]
            print(f"  pixels[0] mean {px.mean():.3f} min {px.min()} max {px.max()}")
            print(f"  prompt_ids[0][:8] = {f['prompt_ids'][0][:8].tolist()}")
    return problems


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    status = 0
    for path in sys.argv[1:]:
        try:
            problems = check(path)
        except OSError as e:
            problems = [f"cannot read: {e}"]
        for p in problems:
            print(f"{path}: {p}")
        print(f"{path}: {'OK' if not problems else 'FAILED'}")
        status |= bool(problems)
    return status


if __name__ == "__main__":
    sys.exit(main())
