#!/usr/bin/env python3
"""images/s for the reference image path: PIL open -> exif_transpose -> convert("RGB") -> torchvision-
equivalent Resize(R, BILINEAR) + CenterCrop(R) -> ToTensor + Normalize (numpy float32), one process.

    /opt/venvs/ref/bin/python bench/image_pipeline_pil.py [DATA_DIR] [RESOLUTION] [REPEATS]
"""
import glob
import os
import sys
import time

import numpy as np
from PIL import Image, ImageOps


def pipeline(path, size):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    t_dec = time.perf_counter()
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    arr = np.asarray(im)
    t_rs = time.perf_counter()
    x = (arr.astype(np.float32) / 255.0 - 0.5) / 0.5
    t_norm = time.perf_counter()
    return t_dec, t_rs, t_norm, x


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "DREAMBOOTH_SHARED_DATA", os.path.join(root, "..", "shared", "data", "dreambooth"))
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    files = sorted(f for f in glob.glob(os.path.join(d, "**", "*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    best = None
    for _ in range(repeats):
        dec = rs = norm = 0.0
        t0 = time.perf_counter()
        for f in files:
            a = time.perf_counter()
            t_dec, t_rs, t_norm, _ = pipeline(f, size)
            dec += t_dec - a
            rs += t_rs - t_dec
            norm += t_norm - t_rs
        s = time.perf_counter() - t0
        if best is None or s < best[0]:
            best = (s, dec, rs, norm)
    n = len(files)
    s, dec, rs, norm = best
    print(f"{n} images under {d}, resolution {size}, best of {repeats}, Pillow {Image.__version__}")
    print(f"{'PIL (1 process)':28s} {'images/s':>10s} {'decode ms':>10s} {'resize ms':>10s} {'norm ms':>10s}")
    print(f"{'decode+resize+crop x1':28s} {n / s:10.1f} {dec / n * 1e3:10.2f} {rs / n * 1e3:10.2f} "
          f"{norm / n * 1e3:10.2f}")


if __name__ == "__main__":
    main()
