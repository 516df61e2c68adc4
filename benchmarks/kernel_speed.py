"""Speed of the reproducible numba kernel on a 202x128x128 cube: M samples/s per size.

Encoder side: ``predict_cube`` on the whole cube (threads 1 and 2). Decoder side: the
``KernelStepper`` loop as a decoder runs it (``start``, then per line ``begin_line`` and per
band ``predict_band`` + ``push_band``), threaded (default) and unthreaded.

Each row also gives the multiply-adds per second of the dense layers (``linerwkv_macs``) and
their fraction of the machine's float32 ceiling, measured here as torch's matrix product of
two 2048x2048 float32 matrices on the same number of threads (oneDNN/MKL, close to the FMA
peak): the kernel cannot run faster than that ceiling allows without leaving float32.

    python benchmarks/kernel_speed.py [--sizes XS S] [--threads 1 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine, write_rows
from speed_table import linerwkv_macs

from hsicomp.data.synthetic import generate_cube
from hsicomp.models import LineRWKV
from hsicomp.models.kernel import ARITHMETIC_VERSION, KernelStepper, KernelWeights, predict_cube
from hsicomp.training.linerwkv import normalise


def decode_loop(weights: KernelWeights, x: np.ndarray, threaded: bool) -> None:
    """The prediction work of a decoder: every band-line predicted, then pushed."""
    n_bands, n_lines, n_cols = x.shape
    stepper = KernelStepper(weights, threaded=threaded)
    stepper.start(x[:, 0])
    out = np.empty(n_cols, dtype=np.float32)
    for t in range(1, n_lines):
        stepper.begin_line()
        for i in range(n_bands):
            stepper.predict_band(i, out)
            stepper.push_band(i, x[i, t])


def gemm_macs_per_s(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second of torch's float32 n x n matrix product on ``threads`` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best, _ = best_of(lambda: a @ b, repeats)
    finally:
        torch.set_num_threads(previous)
    return n**3 / best


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best, worst) wall-clock seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["XS", "S"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bands", type=int, default=202)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--name", default="kernel_speed")
    args = parser.parse_args()
    print(f"machine: {machine()}; kernel arithmetic {ARITHMETIC_VERSION}")
    cube = generate_cube(0, bands=args.bands, rows=args.side, cols=args.side)
    xn, _, _ = normalise(torch.from_numpy(cube.astype(np.float32)))
    x = np.ascontiguousarray(xn.numpy(), dtype=np.float32)
    n_pred = x.shape[0] * (x.shape[1] - 1) * x.shape[2]  # predicted samples
    ceiling = {t: gemm_macs_per_s(t) for t in sorted({*args.threads, 1, 2})}
    for t, value in ceiling.items():
        print(f"float32 matrix product, {t} thread(s): {value / 1e9:.1f} G multiply-adds/s")
    rows = []
    for size in args.sizes:
        torch.manual_seed(0)
        weights = KernelWeights.from_model(LineRWKV.from_size(size).eval())
        small = x[:4, :4, :32]
        predict_cube(weights, small)  # compile / load the cache outside the timings
        decode_loop(weights, small, True)
        # (name, threads it runs on, call)
        runs = [(f"encode t{t}", t, lambda w=weights, t=t: predict_cube(w, x, threads=t))
                for t in args.threads]
        if not args.skip_decode:
            runs += [("decode threaded", 2, lambda w=weights: decode_loop(w, x, True)),
                     ("decode serial", 1, lambda w=weights: decode_loop(w, x, False))]
        config = LineRWKV.from_size(size).config
        for name, threads, fn in runs:
            best, worst = best_of(fn, args.repeats)
            mac = linerwkv_macs(config, x.shape, decoder=name.startswith("decode")) / best
            row = {"size": size, "run": name, "best_s": best, "worst_s": worst,
                   "msamples_per_s": n_pred / best / 1e6,
                   "msamples_per_s_worst": n_pred / worst / 1e6,
                   "gmacs_per_s": mac / 1e9, "of_matrix_product": mac / ceiling[threads]}
            print(row, flush=True)
            rows.append(row)
    write_rows(args.name, rows)


if __name__ == "__main__":
    main()
