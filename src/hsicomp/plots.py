"""Figures from the aggregated results: rate-distortion curves per dataset."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from hsicomp.atomic import atomic_path
from hsicomp.errors import HsicompError

#: Matplotlib settings shared by every figure of the project.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "savefig.dpi": 150,
    "figure.dpi": 150,
    "svg.hashsalt": "hsicomp",
}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
#: Metadata that would otherwise embed the time of drawing or the library version.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
_NO_MODEL = ("", "none", "-")
#: Order of the LineRWKV sizes in legends (other model names follow, alphabetically).
_MODEL_ORDER = {"XS": 0, "S": 1, "M": 2, "L": 3}


def series_label(codec: str, model: str) -> str:
    """Legend label of a codec/model pair: ``codec`` alone, or ``codec model``."""
    return codec if model.lower() in _NO_MODEL or model == codec else f"{codec} {model}"


def _series_key(row: dict) -> tuple:
    """Sort key of a row's curve: codec label, then model size."""
    model = row["model"]
    return (row["codec"], _MODEL_ORDER.get(model, len(_MODEL_ORDER)), model)


def rd_series(rows: list[dict]) -> list[str]:
    """Legend labels of the curves, one per (codec, model), in drawing order."""
    ordered = sorted(rows, key=_series_key)
    return list(dict.fromkeys(r["series"] for r in ordered))


def _read_rd(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise HsicompError(f"{path}: rate-distortion file not found") from None
    try:
        return [{"dataset": r["dataset"], "codec": r["codec"], "model": r["model"],
                 "series": series_label(r["codec"], r["model"]),
                 "bpppc": float(r["bpppc"]), "psnr": float(r["psnr"])} for r in rows]
    except (KeyError, TypeError, ValueError):
        raise HsicompError(f"{path}: not a rate-distortion file (needs dataset, codec, model, "
                           f"bpppc, psnr)") from None


def plot_rd(rd_csv: Path, out_png: Path, out_pdf: Path | None = None) -> None:
    """Draw PSNR against bits per sample, one panel per dataset, one line per codec/model.

    A curve is one (codec, model) pair of the CSV, e.g. ``linerwkv-arith XS`` and
    ``linerwkv-arith S`` are two curves; codecs without a model (``-``) are labelled alone.

    Points with infinite PSNR (lossless) go on a strip below each panel, sharing its rate axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rd(Path(rd_csv))
    if not rows:
        raise HsicompError(f"{rd_csv}: no rows to plot")
    datasets = sorted({r["dataset"] for r in rows})
    series = rd_series(rows)
    look = {s: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, s in enumerate(series)}
    has_lossless = any(math.isinf(r["psnr"]) for r in rows)

    with matplotlib.rc_context(STYLE):
        n_rows = 2 if has_lossless else 1
        fig, axes = plt.subplots(
            n_rows, len(datasets), figsize=(4.2 * len(datasets) + 1.6, 3.6 + 1.2 * has_lossless),
            sharex="col", squeeze=False, layout="constrained",
            gridspec_kw={"height_ratios": [3, 1] if has_lossless else [1]})
        for col, dataset in enumerate(datasets):
            ax = axes[0][col]
            mine = [r for r in rows if r["dataset"] == dataset]
            for s in series:
                pts = sorted((r["bpppc"], r["psnr"]) for r in mine
                             if r["series"] == s and math.isfinite(r["psnr"]))
                if pts:
                    color, marker = look[s]
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color,
                            marker=marker, label=s)
            ax.set_title(dataset)
            ax.set_ylabel("PSNR (dB)")
            if not any(math.isfinite(r["psnr"]) for r in mine):
                ax.text(0.5, 0.5, "no lossy points", transform=ax.transAxes, ha="center",
                        va="center", color="0.5")
            if has_lossless:
                _lossless_strip(axes[1][col], mine, series, look)
            axes[-1][col].set_xlabel("rate (bits per sample, bpppc)")
        handles = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside right upper")
        try:
            _save(fig, Path(out_png), "png", PNG_METADATA)
            if out_pdf is not None:
                _save(fig, Path(out_pdf), "pdf", PDF_METADATA)
        finally:
            plt.close(fig)


def _lossless_strip(ax, rows: list[dict], series: list[str], look: dict) -> None:
    """Lossless rates of one dataset: one marker per codec/model, labelled with its value."""
    lossless = [s for s in series
                if any(r["series"] == s and math.isinf(r["psnr"]) for r in rows)]
    for y, s in enumerate(lossless):
        color, marker = look[s]
        rates = sorted(r["bpppc"] for r in rows if r["series"] == s and math.isinf(r["psnr"]))
        ax.plot(rates, [y] * len(rates), linestyle="none", color=color, marker=marker, label=s)
        for x in rates:
            ax.annotate(f"{x:.3f}", (x, y), xytext=(4, 3), textcoords="offset points",
                        fontsize=7, color=color)
    ax.set_yticks(range(len(lossless)), lossless)
    ax.set_ylim(-0.7, max(len(lossless), 1) - 0.3)
    ax.set_ylabel("lossless\n(PSNR = inf)")
    ax.margins(x=0.1)
    ax.grid(axis="y", visible=False)
    if not lossless:
        ax.text(0.5, 0.5, "no lossless points", transform=ax.transAxes, ha="center",
                va="center", color="0.5")


def _save(fig, path: Path, fmt: str, metadata: dict) -> None:
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, metadata=metadata)


def _cmd_plot_rd(args: argparse.Namespace) -> int:
    plot_rd(args.rd_csv, args.png, args.pdf)
    print(f"wrote {args.png}" + (f" and {args.pdf}" if args.pdf else ""), file=sys.stderr)
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the ``plot-rd`` command."""
    p = sub.add_parser("plot-rd", help="draw rate-distortion curves from an rd CSV")
    p.add_argument("rd_csv", type=Path, metavar="RD_CSV", help="rate-distortion summary CSV")
    p.add_argument("--png", type=Path, required=True, help="output PNG")
    p.add_argument("--pdf", type=Path, help="output PDF (optional)")
    p.set_defaults(func=_cmd_plot_rd)
