#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_safetensors (a few valid and invalid files, plain Python, no deps).

Run: python3 tests/fuzz/make_corpus.py   (rewrites tests/fuzz/corpus/seed_*)
"""
import json
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus")
os.makedirs(out, exist_ok=True)


def image(header, data=b""):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


seeds = {
    "valid_mixed": image(
        {
            "__metadata__": {"format": "pt"},
            "a": entry("F32", [2, 2], 0, 16),
            "b": entry("BF16", [3], 16, 22),
            "c": entry("F16", [1, 1], 22, 24),
            "d": entry("I64", [1], 24, 32),
            "e": entry("I32", [1], 32, 36),
            "f": entry("U8", [3], 36, 39),
            "g": entry("F32", [0, 7], 39, 39),
            "s": entry("F32", [], 39, 43),
        },
        bytes(range(43)),
    ),
    "valid_empty_header": image({}),
    "valid_gap": image({"a": entry("U8", [2], 4, 6)}, b"\x01" * 8),
    "bad_overlap": image({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12)),
    "bad_overflow": image({"a": entry("F32", [4611686018427387904, 4], 0, 16)}, bytes(16)),
    "bad_dup_key": image(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x"),
    "bad_f64": image({"a": entry("F64", [1], 0, 8)}, bytes(8)),
    "bad_size": image({"a": entry("F16", [3], 0, 4)}, bytes(4)),
    "bad_range": image({"a": entry("U8", [4], 2, 6)}, bytes(4)),
    "bad_json": image(b'{"a": {"dtype": "F32", "shape": [1, '),
    "bad_metadata": image({"__metadata__": {"k": 1}}),
    "bad_len": struct.pack("<Q", 1 << 40) + b"{}",
    "bad_short": b"\x02\x00\x00",
}
for name, b in seeds.items():
    with open(os.path.join(out, "seed_" + name), "wb") as f:
        f.write(b)
print(len(seeds), "seeds,", sum(len(b) for b in seeds.values()), "bytes")
