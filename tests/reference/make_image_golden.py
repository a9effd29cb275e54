#!/usr/bin/env python3
"""Image fixtures and PIL/torchvision-equivalent golden results for the C++ image tests.

Run with the reference venv (pillow, numpy):
    /opt/venvs/ref/bin/python tests/reference/make_image_golden.py [--shared DIR]

Writes
  tests/fixtures/images/*.{png,jpg}   synthetic images of odd sizes and every decoder path
  tests/golden/images/index.json      what each fixture decodes to and its resize+crop results
  tests/golden/images/*.z             uint8 HWC RGB arrays: byte deltas (d[i] = a[i] - a[i-3] mod 256 for
                                      i >= 3, d[i] = a[i] below) of the flattened array, zlib-compressed
and, when --shared points at the DreamBooth photos (default ../shared/data/dreambooth), golden
results for the dog photos: decoded and 512-resized pixels subsampled every 8th row/column, and
the full 64-resolution result.

The transform is diffusers' DreamBooth dataset: exif_transpose, convert("RGB"),
transforms.Resize(size, BILINEAR) then CenterCrop(size). Resize and CenterCrop are re-implemented
here exactly as torchvision does them on a PIL image (torchvision is not installed):
  short side -> size, long side -> int(size * long / short); Image.resize(..., BILINEAR);
  crop_top = int(round((h - size) / 2.0)) (Python round: half to even).
"""
import argparse
import io
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "images")
GOLD = os.path.join(ROOT, "tests", "golden", "images")

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos": Image.Resampling.LANCZOS}


def tv_resize(im, size, resample):
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return im
    return im.resize((new_w, new_h), resample)


def tv_center_crop(im, size):
    w, h = im.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def load_rgb(path):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def pattern(h, w, c, seed, noise=2):
    """Smooth gradients, hard edges and a little noise: compresses well, exercises the filters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, c), np.float64)
    for ch in range(c):
        g = 40 + 170 * (x / max(w - 1, 1)) * (ch % 2) + 170 * (y / max(h - 1, 1)) * ((ch + 1) % 2)
        g += np.round(30 * np.sin(2 * np.pi * ((x * (ch + 1) + y * 2) % 16) / 16))  # periodic: zlib-friendly
        g += np.where(((x // 7) + (y // 5)) % 2 == 0, 25, -25)  # hard checker edges
        g += rng.integers(-noise, noise + 1, size=(h, w))
        out[..., ch] = g
    return np.clip(out, 0, 255).astype(np.uint8)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def raw_png(path, arr, color_type, bit_depth, extra=b""):
    """Writes a PNG by hand (16-bit and low bit depths PIL cannot write). arr: [h, w, c] ints."""
    h, w = arr.shape[:2]
    rows = []
    for r in range(h):
        row = arr[r].reshape(-1)
        if bit_depth == 16:
            data = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            data = row.astype(np.uint8).tobytes()
        else:
            per = 8 // bit_depth
            padded = np.zeros(((len(row) + per - 1) // per) * per, np.uint8)
            padded[: len(row)] = row
            packed = np.zeros(len(padded) // per, np.uint8)
            for i in range(per):
                packed |= (padded[i::per] << (8 - bit_depth * (i + 1))).astype(np.uint8)
            data = packed.tobytes()
        rows.append(b"\x00" + data)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))


def tiff_orientation(orientation, big_endian):
    e = ">" if big_endian else "<"
    head = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    # IFD0: ImageDescription (ASCII, out of line) then Orientation, so the parser must walk entries.
    desc = b"dreambooth test\x00"
    desc_off = 8 + 2 + 2 * 12 + 4
    ifd = struct.pack(e + "H", 2)
    ifd += struct.pack(e + "HHII", 0x010E, 2, len(desc), desc_off)
    ifd += struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    ifd += struct.pack(e + "I", 0)
    return head + ifd + desc


def make_fixtures():
    os.makedirs(FIX, exist_ok=True)
    made = []

    def add(name, kind):
        made.append((name, kind))

    Image.fromarray(pattern(91, 37, 3, 1)).save(os.path.join(FIX, "rgb_37x91.png"))
    add("rgb_37x91.png", "png")
    Image.fromarray(pattern(200, 300, 4, 2, noise=1), "RGBA").save(os.path.join(FIX, "rgba_300x200.png"))
    add("rgba_300x200.png", "png")
    Image.fromarray(pattern(512, 513, 1, 3, noise=0)[..., 0], "L").save(os.path.join(FIX, "gray_513x512.png"))
    add("gray_513x512.png", "png")
    Image.fromarray(pattern(40, 70, 2, 4), "LA").save(os.path.join(FIX, "graya_70x40.png"))
    add("graya_70x40.png", "png")
    pal = Image.fromarray(pattern(45, 64, 3, 5)).quantize(colors=37)
    pal.info["transparency"] = bytes([255, 0, 128] + [255] * 10)
    pal.save(os.path.join(FIX, "palette_trns_64x45.png"), transparency=pal.info["transparency"])
    add("palette_trns_64x45.png", "png")
    rng = np.random.default_rng(9)
    base = pattern(33, 50, 3, 6).astype(np.uint32)
    rgb16 = base * 257 + rng.integers(0, 257, size=base.shape)
    raw_png(os.path.join(FIX, "rgb16_50x33.png"), rgb16, 2, 16)
    add("rgb16_50x33.png", "png")
    rgba16 = np.concatenate([rgb16, rng.integers(0, 65536, size=(33, 50, 1))], axis=2)
    raw_png(os.path.join(FIX, "rgba16_50x33.png"), rgba16, 6, 16)
    add("rgba16_50x33.png", "png")
    g16 = (pattern(21, 30, 1, 7).astype(np.uint32) * 3)  # values 0..765: PIL clips I;16 to 255
    raw_png(os.path.join(FIX, "gray16_30x21.png"), g16, 0, 16)
    add("gray16_30x21.png", "png")
    ga16 = np.concatenate([g16 * 80, rng.integers(0, 65536, size=(21, 30, 1))], axis=2)
    raw_png(os.path.join(FIX, "graya16_30x21.png"), ga16, 4, 16)
    add("graya16_30x21.png", "png")
    g4 = pattern(19, 23, 1, 8) >> 4
    raw_png(os.path.join(FIX, "gray4_23x19.png"), g4, 0, 4)
    add("gray4_23x19.png", "png")
    g1 = pattern(13, 29, 1, 10) >> 7
    raw_png(os.path.join(FIX, "gray1_29x13.png"), g1, 0, 1)
    add("gray1_29x13.png", "png")
    exif = b"Exif\x00\x00"
    raw_png(os.path.join(FIX, "exif6_40x24.png"), pattern(24, 40, 3, 11), 2, 8,
            extra=png_chunk(b"eXIf", tiff_orientation(6, True)))
    add("exif6_40x24.png", "png")

    Image.fromarray(pattern(17, 1000, 3, 12)).save(os.path.join(FIX, "rgb_1000x17.jpg"), quality=90)
    add("rgb_1000x17.jpg", "jpeg")
    Image.fromarray(pattern(120, 161, 3, 13)).save(os.path.join(FIX, "progressive_161x120.jpg"), quality=85,
                                                  progressive=True)
    add("progressive_161x120.jpg", "jpeg")
    Image.fromarray(pattern(99, 77, 1, 14)[..., 0], "L").save(os.path.join(FIX, "gray_77x99.jpg"), quality=90)
    add("gray_77x99.jpg", "jpeg")
    Image.fromarray(pattern(41, 53, 4, 15), "CMYK").save(os.path.join(FIX, "cmyk_53x41.jpg"), quality=92)
    add("cmyk_53x41.jpg", "jpeg")
    Image.fromarray(pattern(64, 96, 3, 16)).save(os.path.join(FIX, "rgb444_96x64.jpg"), quality=95,
                                                subsampling=0)
    add("rgb444_96x64.jpg", "jpeg")
    for o in range(1, 9):
        big = o in (4, 5, 8)
        name = f"exif{o}_{'be' if big else 'le'}_60x34.jpg"
        Image.fromarray(pattern(34, 60, 3, 20 + o)).save(os.path.join(FIX, name), quality=90,
                                                        exif=exif + tiff_orientation(o, big))
        add(name, "jpeg")
    return made


def zsave(name, arr):
    # Per-channel delta along the flattened HWC array (mod 256), then zlib: like PNG's Sub filter.
    flat = np.ascontiguousarray(arr, np.uint8).reshape(-1)
    delta = flat.copy()
    delta[3:] = flat[3:] - flat[:-3]
    with open(os.path.join(GOLD, name), "wb") as f:
        f.write(zlib.compress(delta.tobytes(), 9))
    return name


def fixture_golden(made):
    os.makedirs(GOLD, exist_ok=True)
    entries = []
    for name, kind in made:
        im = load_rgb(os.path.join(FIX, name))
        dec = np.asarray(im)
        e = {"file": name, "kind": kind, "width": im.size[0], "height": im.size[1],
             "decoded": zsave(name + ".rgb.z", dec), "transforms": []}
        for res in (32, 64):
            for filt in ("bilinear",) + (("bicubic", "lanczos") if res == 64 else ()):
                r = tv_resize(im, res, FILTERS[filt])
                c = tv_center_crop(r, res)
                t = {"resolution": res, "filter": filt, "resized_width": r.size[0], "resized_height": r.size[1],
                     "data": zsave(f"{name}.{filt}{res}.rgb.z", np.asarray(c))}
                e["transforms"].append(t)
        entries.append(e)
    return entries


def shared_golden(shared):
    entries = []
    dog = os.path.join(shared, "dog")
    if not os.path.isdir(dog):
        print(f"no shared data at {dog}: skipping photo golden")
        return entries
    for fn in sorted(os.listdir(dog)):
        if not fn.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        im = load_rgb(os.path.join(dog, fn))
        dec = np.asarray(im)
        r512 = tv_center_crop(tv_resize(im, 512, Image.Resampling.BILINEAR), 512)
        r64 = tv_center_crop(tv_resize(im, 64, Image.Resampling.BILINEAR), 64)
        entries.append({"file": "dog/" + fn, "width": im.size[0], "height": im.size[1], "stride": 8,
                        "decoded_sub": zsave(f"dog_{fn}.dec_sub8.rgb.z", dec[::8, ::8]),
                        "decoded_mean": float(dec.mean()),
                        "r512_sub": zsave(f"dog_{fn}.r512_sub8.rgb.z", np.asarray(r512)[::8, ::8]),
                        "r512_mean": float(np.asarray(r512).mean()),
                        "r64": zsave(f"dog_{fn}.r64.rgb.z", np.asarray(r64))})
    return entries


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.environ.get("DREAMBOOTH_SHARED_DATA",
                                                       os.path.join(ROOT, "..", "shared", "data", "dreambooth")))
    args = ap.parse_args()
    made = make_fixtures()
    index = {"generator": "tests/reference/make_image_golden.py",
             "pillow": Image.__version__ if hasattr(Image, "__version__") else "",
             "fixtures": fixture_golden(made), "photos": shared_golden(args.shared)}
    import PIL
    index["pillow"] = PIL.__version__
    with open(os.path.join(GOLD, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, n)) for d in (FIX, GOLD) for n in os.listdir(d))
    print(f"{len(made)} fixtures, {len(index['photos'])} photos, {total / 1e6:.2f} MB in fixtures+golden")


if __name__ == "__main__":
    main()
