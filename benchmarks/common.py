"""Helpers shared by the benchmark scripts: machine description, models and CSV output."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from hsicomp.io.table import write_table

OUT = Path(__file__).resolve().parent / "out"


def cpu() -> str:
    """The CPU model and the number of logical CPUs, e.g. ``Intel(R) Xeon(R), 2 logical CPUs``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def machine() -> str:
    """One line describing the CPU (and GPU, when torch sees one)."""
    import torch

    text = f"{cpu()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def model_file(size: str, folder: Path | None, scratch: Path) -> tuple[Path, bool]:
    """(model path, trained?) for one LineRWKV size.

    ``folder/linerwkv-<size>.pt`` when it exists, else a model with random weights (seed 0)
    saved in ``scratch``: the same speed and multiply-adds, a meaningless rate.
    """
    if folder is not None and (folder / f"linerwkv-{size}.pt").is_file():
        return folder / f"linerwkv-{size}.pt", True
    path = scratch / f"random-{size}.pt"
    if not path.exists():
        import torch

        from hsicomp.models import LineRWKV
        from hsicomp.models.checkpoint import save_model

        torch.manual_seed(0)
        save_model(path, LineRWKV.from_size(size).eval(), size)
    return path, False


def print_rows(rows: list[dict]) -> None:
    """Print rows as a ``|``-separated table."""
    keys = list(rows[0])
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k])
                         for k in keys))


def write_rows(name: str, rows: list[dict]) -> Path:
    """Write rows to benchmarks/out/<name>.csv and print them as a table."""
    path = OUT / f"{name}.csv"
    write_table(path, rows, list(rows[0]))
    print_rows(rows)
    print(f"written to {path}")
    return path
