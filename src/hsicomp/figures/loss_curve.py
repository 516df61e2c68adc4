"""The loss curves of a LineRWKV training run, from its CSV log."""

from __future__ import annotations

import math
from pathlib import Path

from hsicomp.figures.plots import PNG_METADATA, STYLE
from hsicomp.io.atomic import atomic_path
from hsicomp.io.table import read_table

#: Columns the figure draws from.
_COLUMNS = ("step", "train_loss", "val_l1", "val_bits")


def plot_training_log(log_csv: Path, out_png: Path, title: str) -> None:
    """Loss curves (training loss and validation L1 / bits) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_table(log_csv, _COLUMNS, what="training log")
    steps = [int(r["step"]) for r in rows]
    val = [r for r in rows if math.isfinite(float(r["val_l1"]))]
    val_steps = [int(r["step"]) for r in val]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        ax[0].plot(steps, [float(r["train_loss"]) for r in rows], marker=".", label="train")
        ax[0].plot(val_steps, [float(r["val_l1"]) for r in val], marker="s",
                   label="validation L1")
        ax[0].set(xlabel="step", ylabel="loss", title=f"LineRWKV {title}")
        ax[0].legend()
        ax[1].plot(val_steps, [float(r["val_bits"]) for r in val], marker="s", color="C2")
        ax[1].set(xlabel="step", ylabel="validation bits/sample", title="rate estimate")
        fig.tight_layout()
        with atomic_path(out_png, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", metadata=PNG_METADATA)
        plt.close(fig)
