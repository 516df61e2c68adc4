"""Helpers shared by the benchmark scripts: machine description and CSV output."""

from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


def machine() -> str:
    """One line describing the CPU (and GPU, when torch sees one)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def write_rows(name: str, rows: list[dict]) -> Path:
    """Write rows to benchmarks/out/<name>.csv and print them as a table."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                         for k in keys))
    print(f"written to {path}")
    return path
