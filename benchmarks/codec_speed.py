"""linerwkv codec: encode/decode samples/s per size and coder on a 202x128x128 cube, and the
payload against the ideal code length of the coder's own model.

    python benchmarks/codec_speed.py [--sizes XS S] [--coders arith sample-adaptive]
        [--deltas 0 5 40] [--models models/synthetic] [--threads 2] [--repeats 1]

Cubes: a synthetic 202x128x128 cube (the speed figures), and, when the shared data folder is
present, the real EnMAP mosaic ``se_128x64`` (202 bands, 14 bits) for rates on real data.
Models are read from ``--models`` (``linerwkv-<size>.pt``); a size without a file there is
run with random weights (same speed, meaningless rate), marked ``untrained``. Every file is
decoded and compared with the original.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine, model_file, write_rows

from hsicomp.codecs import get_codec
from hsicomp.io.container import unpack

ENMAP_DIR = Path(__file__).resolve().parents[2] / "shared/data/enmap-potsdam"
#: Tiles of the se_128x64 mosaic (config/enmap-potsdam.yaml).
SE_TILES = [f"enmap_potsdam_tile_{r}_{c}.tif" for c in (64, 96, 128, 160) for r in (160, 192)]


def load_cubes() -> list[tuple[str, np.ndarray]]:
    """(name, uint16 cube) of the benchmark cubes."""
    from hsicomp.data.synthetic import generate_cube

    cubes = [("synthetic", generate_cube(0, bands=202, rows=128, cols=128))]
    paths = [ENMAP_DIR / t for t in SE_TILES]
    if all(p.is_file() for p in paths):
        from hsicomp.data.datasets import read_geotiff, to_uint

        data, nodata = read_geotiff(paths, "enmap202")
        cubes.append(("enmap se_128x64", to_uint(data, 14, nodata, "se_128x64").cube))
    return cubes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["XS", "S"])
    parser.add_argument("--coders", nargs="+", default=["arith", "sample-adaptive"])
    parser.add_argument("--deltas", nargs="+", type=int, default=[0, 5, 40])
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with linerwkv-<size>.pt files")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    cubes = load_cubes()
    print(f"machine: {machine()}; threads {args.threads}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path, trained = model_file(size, args.models, Path(tmp))
            for coder in args.coders:
                codec = get_codec("linerwkv", {"model": str(path), "coder": coder,
                                               "threads": args.threads})
                codec.encode(cubes[0][1][:, :2, :8], 0, 14)  # load model and compiled code
                for (name, cube), delta in ((c, d) for c in cubes for d in args.deltas):
                    enc_s, dec_s = [], []
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        data = codec.encode(cube, delta, 14)
                        enc_s.append(time.perf_counter() - t0)
                        t0 = time.perf_counter()
                        out = codec.decode(data)
                        dec_s.append(time.perf_counter() - t0)
                    err = int(np.abs(out.astype(np.int64) - cube).max())
                    if err > delta:
                        raise SystemExit(f"{size} {coder} delta {delta}: max error {err}")
                    payload = len(unpack(data)[2])
                    codec.track_ideal = True  # an untimed encode counting the ideal length
                    if codec.encode(cube, delta, 14) != data:
                        raise SystemExit(f"{size} {coder} delta {delta}: encoding not repeatable")
                    codec.track_ideal = False
                    stats = codec.last_stats
                    ideal = stats["ideal_bits"]
                    rows.append({
                        "cube": f"{name} {'x'.join(map(str, cube.shape))}",
                        "size": size + ("" if trained else " (untrained)"),
                        "coder": coder,
                        "delta": delta,
                        "encode_msamples_s": cube.size / min(enc_s) / 1e6,
                        "decode_msamples_s": cube.size / min(dec_s) / 1e6,
                        "bpppc_file": 8 * len(data) / cube.size,
                        "bpppc_ideal_payload": ideal / cube.size,
                        "payload_overhead_pct": 100 * (8 * payload - ideal) / ideal,
                        "near_half_pct": 100 * stats["near_half"] / max(1, stats["predicted"]),
                    })
    write_rows("codec_speed", rows)


if __name__ == "__main__":
    main()
