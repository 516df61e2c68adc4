"""Training throughput of LineRWKV per size: samples (band windows of whole patches) per second.

Runs the training step of the released recipe (batch, pos_size per size, 16-band windows of
128x128 patches, L1 loss, AdamW) on synthetic patches, on the CPU and, when present, a GPU.

    python benchmarks/train_throughput.py [--sizes XS S M L] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import machine, write_rows

from hsicomp.data.synthetic import generate_cube
from hsicomp.models import LineRWKV
from hsicomp.training.linerwkv import normalise

RECIPE = {"XS": (3, 128), "S": (4, 64), "M": (8, 32), "L": (3, 16)}  # batch, pos_size


def measure(size: str, device: torch.device, steps: int, side: int, recompute: bool) -> float:
    """Samples per second of training steps of ``size`` on ``device``."""
    batch, pos_size = RECIPE[size]
    torch.manual_seed(0)
    model = LineRWKV.from_size(size).to(device)
    model.recompute_blocks = recompute
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99))
    cube = generate_cube(1, bands=16 * batch, rows=side, cols=side).astype(np.float32)
    x = torch.from_numpy(cube.reshape(batch, 16, side, side)).to(device)
    rng = np.random.default_rng(0)

    def step() -> None:
        cols = np.sort(np.stack([rng.choice(side, min(pos_size, side), replace=False)
                                 for _ in range(batch)]), axis=1)
        columns = torch.from_numpy(cols).to(device)
        xn, mean, std = normalise(x)
        pred = model(xn, columns=columns) * std + mean
        idx = columns[:, None, None, :].expand(-1, 16, side - 1, -1)
        loss = (pred - x[:, :, 1:].gather(3, idx)).abs().mean() * 1e-3
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["XS", "S", "M", "L"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=128, help="patch rows = cols")
    parser.add_argument("--recompute", action="store_true",
                        help="activation checkpointing of the RWKV blocks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    print(f"machine: {machine()}; torch threads {args.threads}")
    rows = []
    for device in devices:
        for size in args.sizes:
            rate = measure(size, device, args.steps, args.side, args.recompute)
            batch, pos = RECIPE[size]
            rows.append({"size": size, "device": device.type, "recompute": args.recompute,
                         "batch": batch, "pos_size": pos,
                         "samples_per_s": rate, "steps_per_s": rate / batch})
    write_rows("train_throughput", rows)


if __name__ == "__main__":
    main()
