"""ccsds123 codec against the CCSDS-123 anchor table, and its encode/decode speed.

    python benchmarks/ccsds123_anchor.py [--deltas 0 1 2 3 4 5 10 20 40]
        [--coders sample-adaptive arith] [--bit-depth 16] [--repeats 3] [--no-speed]

Rates: the EnMAP crops of ``shared/docs/anchors.md`` (``se_128x64``: tiles X in {160, 192}
x Y in {64, 96, 128, 160}; ``mid_64x64``: X, Y in {96, 128}; 202 bands, values below 2**14
as uint16), coded with the default (recommended) configuration at every delta with each
coder; every file is decoded and checked (exact at delta 0, max error <= delta otherwise).
The rate is 8 x (.hsic file bytes) / samples. The anchor table was measured with D = 16,
hence ``--bit-depth 16``; ``sample-adaptive`` is compared with the anchor's
sample-adaptive row, ``arith`` with both the sample-adaptive and the hybrid rows.

Speed: samples/s of encode and decode on the synthetic 202x128x128 cube
(``generate_cube(0, bands=202, rows=128, cols=128)``), best of ``--repeats`` runs after a
warm-up (numba compilation excluded).

Writes benchmarks/out/ccsds123_anchor.csv.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import machine, write_rows

from hsicomp.codecs import get_codec

ENMAP_DIR = Path(__file__).resolve().parents[2] / "shared/data/enmap-potsdam"
CROPS = {
    "se_128x64": ((160, 192), (64, 96, 128, 160)),
    "mid_64x64": ((96, 128), (96, 128)),
}
DELTAS = [0, 1, 2, 3, 4, 5, 10, 20, 40]
#: CCSDS-123.0-B-2 reference figures (anchors.md): bits per sample at DELTAS.
ANCHORS = {
    ("se_128x64", "sample-adaptive"): [5.863, 4.300, 3.593, 3.147, 2.825, 2.582, 1.949, 1.525,
                                       1.281],
    ("se_128x64", "hybrid"): [5.868, 4.280, 3.552, 3.093, 2.765, 2.515, 1.809, 1.247, 0.826],
    ("mid_64x64", "sample-adaptive"): [5.848, 4.280, 3.576, 3.123, 2.799, 2.559, 1.937, 1.525,
                                       1.290],
    ("mid_64x64", "hybrid"): [5.849, 4.264, 3.540, 3.081, 2.753, 2.506, 1.802, 1.254, 0.851],
}


def load_crop(name: str) -> np.ndarray | None:
    """The uint16 (202, rows, cols) crop, or None when the tiles are missing."""
    xs, ys = CROPS[name]
    paths = [ENMAP_DIR / f"enmap_potsdam_tile_{x}_{y}.tif" for x in xs for y in ys]
    if not all(p.is_file() for p in paths):
        return None
    from hsicomp.data.datasets import read_geotiff, to_uint

    data, nodata = read_geotiff(paths, "enmap202")
    return to_uint(data, 14, nodata, name).cube


def code(codec, cube: np.ndarray, delta: int, bit_depth: int) -> tuple[bytes, float, float]:
    """Encode and decode once; check the result; return (file bytes, encode s, decode s)."""
    t0 = time.perf_counter()
    data = codec.encode(cube, delta, bit_depth)
    t1 = time.perf_counter()
    out = codec.decode(data)
    t2 = time.perf_counter()
    err = int(np.abs(out.astype(np.int64) - cube.astype(np.int64)).max())
    if err > delta:
        raise SystemExit(f"decoded cube off by {err} > delta {delta}")
    return data, t1 - t0, t2 - t1


def rel(value: float, anchor: float | None) -> str:
    return "" if anchor is None else f"{100 * (value / anchor - 1):+.2f}%"


def rate_rows(args: argparse.Namespace) -> list[dict]:
    rows = []
    for crop in CROPS:
        cube = load_crop(crop)
        if cube is None:
            print(f"{crop}: tiles missing in {ENMAP_DIR}, skipped")
            continue
        for coder in args.coders:
            codec = get_codec("ccsds123", {"coder": coder})
            code(codec, cube[:2, :3, :4], 0, args.bit_depth)  # warm-up (numba compilation)
            for delta in args.deltas:
                data, enc_s, dec_s = code(codec, cube, delta, args.bit_depth)
                bpppc = 8 * len(data) / cube.size
                i = DELTAS.index(delta) if delta in DELTAS else None
                sa = None if i is None else ANCHORS[crop, "sample-adaptive"][i]
                hy = None if i is None else ANCHORS[crop, "hybrid"][i]
                rows.append({
                    "crop": crop, "coder": coder, "delta": delta, "bpppc": round(bpppc, 4),
                    "anchor_sample_adaptive": sa if sa is not None else "",
                    "rel_sample_adaptive": rel(bpppc, sa),
                    "anchor_hybrid": hy if hy is not None else "",
                    "rel_hybrid": rel(bpppc, hy),
                    "enc_samples_s": round(cube.size / enc_s),
                    "dec_samples_s": round(cube.size / dec_s),
                })
                print(f"{crop} {coder:15s} delta {delta:2d}: {bpppc:.4f} bpppc "
                      f"(anchor {sa}, {rel(bpppc, sa)}; hybrid {hy}, {rel(bpppc, hy)})",
                      flush=True)
    return rows


def speed_rows(args: argparse.Namespace) -> list[dict]:
    from hsicomp.data.synthetic import generate_cube

    cube = generate_cube(0, bands=202, rows=128, cols=128)
    rows = []
    for coder in args.coders:
        codec = get_codec("ccsds123", {"coder": coder})
        code(codec, cube[:2, :3, :4], 0, args.bit_depth)  # warm-up (numba compilation)
        for delta in (0, 5):
            best_enc = best_dec = float("inf")
            for _ in range(args.repeats):
                data, enc_s, dec_s = code(codec, cube, delta, args.bit_depth)
                best_enc, best_dec = min(best_enc, enc_s), min(best_dec, dec_s)
            rows.append({
                "crop": "synthetic_202x128x128", "coder": coder, "delta": delta,
                "bpppc": round(8 * len(data) / cube.size, 4),
                "anchor_sample_adaptive": "", "rel_sample_adaptive": "",
                "anchor_hybrid": "", "rel_hybrid": "",
                "enc_samples_s": round(cube.size / best_enc),
                "dec_samples_s": round(cube.size / best_dec),
            })
            print(f"synthetic {coder:15s} delta {delta}: encode {cube.size / best_enc:,.0f} "
                  f"samples/s, decode {cube.size / best_dec:,.0f} samples/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deltas", nargs="+", type=int, default=DELTAS)
    parser.add_argument("--coders", nargs="+", default=["sample-adaptive", "arith"])
    parser.add_argument("--bit-depth", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-speed", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    rows = rate_rows(args)
    if not args.no_speed:
        rows += speed_rows(args)
    if rows:
        write_rows("ccsds123_anchor", rows)


if __name__ == "__main__":
    main()
