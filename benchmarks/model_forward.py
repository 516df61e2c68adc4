"""Parallel-form LineRWKV forward on a full 202x128x128 cube: seconds per cube per size.

    python benchmarks/model_forward.py [--sizes XS S M L] [--threads 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from common import machine, write_rows

from hsicomp.data.synthetic import generate_cube
from hsicomp.models import LineRWKV
from hsicomp.training.linerwkv import normalise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["XS", "S", "M", "L"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--bands", type=int, default=202)
    parser.add_argument("--side", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; torch threads {args.threads}")
    cube = generate_cube(0, bands=args.bands, rows=args.side, cols=args.side)
    x = torch.from_numpy(cube.astype(np.float32))[None]
    xn, _, _ = normalise(x)
    samples = cube.size
    rows = []
    for size in args.sizes:
        model = LineRWKV.from_size(size).eval()
        times = []
        with torch.no_grad():
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(xn)
                times.append(time.perf_counter() - t0)
        best = min(times)
        rows.append({"size": size, "seconds_per_cube": best, "samples_per_s": samples / best,
                     "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    write_rows("model_forward", rows)


if __name__ == "__main__":
    main()
