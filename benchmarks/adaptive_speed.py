"""Speed of the context-adaptive range coder (``arith``): M samples/s, best of N.

Codes a synthetic residual cube (Laplacian residuals whose scale varies smoothly over rows,
columns and bands, predictions anywhere in range) with ``encode_cube``/``decode_cube`` and
line by line with ``ResidualEncoder``/``ResidualDecoder``, as the codecs do.

    python benchmarks/adaptive_speed.py [--bands 202] [--side 128] [--bits 14] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from hsicomp.entropy.adaptive import ResidualDecoder, ResidualEncoder, decode_cube, encode_cube


def residual_cube(shape: tuple[int, int, int], max_value: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(residuals, predictions) with Laplacian residuals of spatially varying scale."""
    rng = np.random.default_rng(seed)
    bands, rows, cols = shape
    b = np.linspace(0.0, 1.0, bands)[:, None, None]
    r = np.linspace(0.0, 2 * np.pi, rows)[None, :, None]
    c = np.linspace(0.0, 2 * np.pi, cols)[None, None, :]
    scale = np.exp(1.0 + 1.5 * np.sin(r + 3 * b) * np.cos(c) + 2.0 * b)  # about 0.4 .. 90
    pred = rng.integers(0, max_value + 1, size=shape)
    x = np.clip(pred + np.rint(rng.laplace(0.0, 1.0, size=shape) * scale), 0, max_value)
    return (x - pred).astype(np.int64), pred.astype(np.int64)


def encode_lines(res: np.ndarray, pred: np.ndarray, max_value: int) -> bytes:
    """Line-by-line encoding in BIL order."""
    enc = ResidualEncoder(res.shape, max_value)
    for t in range(res.shape[1]):
        for i in range(res.shape[0]):
            enc.encode_line(res[i, t], pred[i, t])
    return enc.finish()


def decode_lines(data: bytes, pred: np.ndarray, max_value: int) -> np.ndarray:
    """Line-by-line decoding in BIL order."""
    dec = ResidualDecoder(data, pred.shape, max_value)
    out = np.empty(pred.shape, dtype=np.int64)
    for t in range(pred.shape[1]):
        for i in range(pred.shape[0]):
            out[i, t] = dec.decode_line(pred[i, t])
    return out


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bands", type=int, default=202)
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--bits", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = (args.bands, args.side, args.side)
    top = (1 << args.bits) - 1
    res, pred = residual_cube(shape, top)
    n = res.size
    small = tuple(min(s, 4) for s in shape)
    decode_cube(encode_cube(res[:4, :4, :4], pred[:4, :4, :4], top), pred[:4, :4, :4], top)
    data = encode_cube(res, pred, top)
    if encode_lines(res, pred, top) != data:
        raise SystemExit("line-wise and cube-wise encoders disagree")
    if not np.array_equal(decode_cube(data, pred, top), res):
        raise SystemExit("decode_cube does not round-trip")
    if not np.array_equal(decode_lines(data, pred, top), res):
        raise SystemExit("ResidualDecoder does not round-trip")
    print(f"cube {shape}, max_value {top}: {8 * len(data) / n:.3f} bits/sample "
          f"(warm-up on {small})")
    runs = {
        "encode_cube": lambda: encode_cube(res, pred, top),
        "decode_cube": lambda: decode_cube(data, pred, top),
        "ResidualEncoder": lambda: encode_lines(res, pred, top),
        "ResidualDecoder": lambda: decode_lines(data, pred, top),
    }
    for name, fn in runs.items():
        sec = best_of(fn, args.repeats)
        print(f"{name:16s} {n / sec / 1e6:7.2f} M samples/s  ({sec:.2f} s, best of {args.repeats})")


if __name__ == "__main__":
    main()
