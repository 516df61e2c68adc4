"""Figures from the results: rate-distortion and rate-error curves, lossless rates, per-band
rates of one patch and the reconstruction error of one patch.

Every figure uses :data:`STYLE`, one colour and marker per curve (codec label and model; a
lossy codec's points, one per model, make one curve per label) and is written atomically
as PNG and PDF without timestamps in the metadata.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.evaluation.one_patch import BAND_RATE_COLUMNS, DecodedPatch, Signature
from hsicomp.evaluation.rd_table import rd_series, read_rd, series_label
from hsicomp.io.atomic import atomic_path
from hsicomp.io.table import read_table

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
#: One fewer marker than colours, so that the first 90 curves all look different.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
#: A rate-distortion panel gets a logarithmic rate axis when its rates span more than this
#: factor (lossy learned codecs near 0.01 bpppc next to near-lossless ones near 5).
LOG_RATE_SPAN = 30.0
#: Metadata that would otherwise embed the time of drawing or the library version.
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
RATE_LABEL = "rate (bits per sample, bpppc)"


# --------------------------------------------------------------------------- shared helpers


def _pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _looks(series: list[str]) -> dict[str, tuple[str, str]]:
    """(colour, marker) of every curve label, in drawing order."""
    return {s: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)])
            for i, s in enumerate(series)}


def _figure_legend(fig: Any, axes: Any) -> None:
    """One legend below the panels, in as many columns as fit, with every curve once."""
    handles: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        width = fig.get_figwidth()
        longest = max(len(label) for label in handles)
        columns = max(1, min(len(handles), int(width / (0.35 + 0.075 * longest))))
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncols=columns, handlelength=1.8, columnspacing=1.0)


def _save(fig: Any, path: Path, fmt: str, metadata: dict) -> None:
    with atomic_path(path, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, metadata=metadata)


def save_figure(fig: Any, out_png: Path, out_pdf: Path | None = None) -> None:
    """Write ``fig`` as PNG (and PDF) atomically, without timestamps; then close it."""
    try:
        _save(fig, Path(out_png), "png", PNG_METADATA)
        if out_pdf is not None:
            _save(fig, Path(out_pdf), "pdf", PDF_METADATA)
    finally:
        _pyplot().close(fig)


def _rows_or_fail(rd_csv: Path) -> list[dict]:
    rows = read_rd(Path(rd_csv))
    if not rows:
        raise HsicompError(f"{rd_csv}: no rows to plot")
    return rows


def _delta_text(delta: int, lossy: bool = False) -> str:
    if lossy:
        return "lossy"
    return "lossless" if delta == 0 else f"delta = {delta}"


# --------------------------------------------------------------------------- rate-distortion


def _rd_panel(ax: Any, mine: list[dict], series: list[str], look: dict, key: str,
              label_deltas: bool) -> None:
    """One quality (``psnr`` or ``sam_deg``) against the rate, one line per curve, lossy
    points only; near-lossless points labelled with their delta."""
    for s in series:
        pts = sorted((r["bpppc"], r[key], r["delta"]) for r in mine
                     if r["series"] == s and math.isfinite(r["psnr"]) and r[key] is not None)
        if not pts:
            continue
        color, marker = look[s]
        lossy = any(r["lossy"] for r in mine if r["series"] == s)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker,
                linestyle="--" if lossy else "-", label=s)
        if label_deltas:
            for x, y, delta in pts:
                if delta is not None:
                    ax.annotate(str(delta), (x, y), xytext=(3, -7), textcoords="offset points",
                                fontsize=6, color=color)


def plot_rd(rd_csv: Path, out_png: Path, out_pdf: Path | None = None,
            peaks: dict[str, float] | None = None) -> None:
    """Draw PSNR and the mean spectral angle (SAM) against bits per sample, one column of
    panels per dataset, one line per codec/model.

    A curve is one (codec, model) pair of the CSV, e.g. ``linerwkv-arith XS`` and
    ``linerwkv-arith S`` are two curves; codecs without a model (``-``) are labelled alone.
    A lossy codec is one dashed curve per label through the points of all its models; each
    point of a near-lossless curve is labelled with its delta in the PSNR panel. ``peaks``
    (dataset -> PSNR peak) puts the peak in each column's title. The SAM panel (degrees,
    smaller is better) is drawn when the table has a ``sam_deg`` column.

    Points with infinite PSNR (lossless) go on a strip below each column, sharing its rate
    axis. Rate axes are logarithmic where a column's rates span more than ``LOG_RATE_SPAN``,
    and so is the SAM axis where its angles do.
    """
    plt = _pyplot()
    rows = _rows_or_fail(rd_csv)
    datasets = sorted({r["dataset"] for r in rows})
    series = rd_series(rows)
    look = _looks(series)
    has_lossless = any(math.isinf(r["psnr"]) for r in rows)
    has_sam = all(r.get("sam_deg") is not None for r in rows)
    lossless_rows = max((len({r["series"] for r in rows
                              if r["dataset"] == d and math.isinf(r["psnr"])})
                         for d in datasets), default=0)

    with plt.rc_context(STYLE):
        strip = 0.3 + 0.16 * lossless_rows
        heights = [3.4] + ([2.6] if has_sam else []) + ([strip] if has_lossless else [])
        fig, axes = plt.subplots(
            len(heights), len(datasets),
            figsize=(max(5.5, 4.6 * len(datasets)), 0.8 + sum(heights)
                     + 0.22 * (len(series) // 3 + 1)),
            sharex="col", squeeze=False, layout="constrained",
            gridspec_kw={"height_ratios": heights})
        for col, dataset in enumerate(datasets):
            ax = axes[0][col]
            mine = [r for r in rows if r["dataset"] == dataset]
            _rd_panel(ax, mine, series, look, "psnr", label_deltas=True)
            peak = (peaks or {}).get(dataset)
            ax.set_title(dataset if peak is None else f"{dataset} (PSNR peak {peak:g})")
            ax.set_ylabel("PSNR (dB)")
            rates = [r["bpppc"] for r in mine if r["bpppc"] > 0]
            if rates and max(rates) > LOG_RATE_SPAN * min(rates):
                ax.set_xscale("log")
            if not any(math.isfinite(r["psnr"]) for r in mine):
                ax.text(0.5, 0.5, "no lossy points", transform=ax.transAxes, ha="center",
                        va="center", color="0.5")
            elif any(r["delta"] is not None and math.isfinite(r["psnr"]) for r in mine):
                ax.text(0.99, 0.01, "numbers: delta (max. error)", transform=ax.transAxes,
                        ha="right", va="bottom", fontsize=6, color="0.4")
            if has_sam:
                sam_ax = axes[1][col]
                _rd_panel(sam_ax, mine, series, look, "sam_deg", label_deltas=False)
                sam_ax.set_ylabel("SAM (degrees)")
                angles = [r["sam_deg"] for r in mine
                          if math.isfinite(r["psnr"]) and r["sam_deg"] > 0]
                if angles and max(angles) > LOG_RATE_SPAN * min(angles):
                    sam_ax.set_yscale("log")
            if has_lossless:
                _lossless_strip(axes[-1][col], mine, series, look)
            axes[-1][col].set_xlabel(RATE_LABEL)
        _figure_legend(fig, axes)
        save_figure(fig, out_png, out_pdf)


def _lossless_strip(ax: Any, rows: list[dict], series: list[str], look: dict) -> None:
    """Lossless rates of one dataset: one marker per codec/model, its rate in the label."""
    lossless = [s for s in series
                if any(r["series"] == s and math.isinf(r["psnr"]) for r in rows)]
    labels = []
    for y, s in enumerate(lossless):
        color, marker = look[s]
        rates = sorted(r["bpppc"] for r in rows if r["series"] == s and math.isinf(r["psnr"]))
        ax.plot(rates, [y] * len(rates), linestyle="none", color=color, marker=marker)
        labels.append(f"{s}  {', '.join(f'{x:.3f}' for x in rates)}")
    ax.set_yticks(range(len(lossless)), labels, fontsize=7)
    ax.set_ylim(-0.7, max(len(lossless), 1) - 0.3)
    ax.set_ylabel("lossless\n(PSNR = inf)")
    ax.grid(axis="y", visible=False)
    if not lossless:
        ax.text(0.5, 0.5, "no lossless points", transform=ax.transAxes, ha="center",
                va="center", color="0.5")


def plot_rate_error(rd_csv: Path, out_png: Path, out_pdf: Path | None = None) -> None:
    """Draw the maximum absolute error against bits per sample, one panel per dataset.

    Uses the measured ``max_abs_error`` column, or the requested ``delta`` when the file has
    no such column. Lossless points lie on the zero line. The error axis is linear up to 1
    and logarithmic above (lossy codecs reach errors in the thousands); lossy codecs are
    dashed; the rate axis is logarithmic when the rates span more than ``LOG_RATE_SPAN``.
    """
    plt = _pyplot()
    rows = _rows_or_fail(rd_csv)
    key = "max_abs_error" if rows[0]["max_abs_error"] is not None else "delta"
    if all(r[key] is None for r in rows):
        raise HsicompError(f"{rd_csv}: needs a max_abs_error or delta column")
    datasets = sorted({r["dataset"] for r in rows})
    series = rd_series(rows)
    look = _looks(series)
    ylabel = "max. absolute error (DN)" if key == "max_abs_error" \
        else "max. absolute error bound delta (DN)"
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(datasets), figsize=(max(5.5, 4.6 * len(datasets)),
                                                             4.0 + 0.22 * (len(series) // 3 + 1)),
                                 squeeze=False, layout="constrained")
        for col, dataset in enumerate(datasets):
            ax = axes[0][col]
            mine = [r for r in rows if r["dataset"] == dataset]
            for s in series:
                pts = sorted((r["bpppc"], r[key]) for r in mine
                             if r["series"] == s and r[key] is not None)
                if pts:
                    color, marker = look[s]
                    lossy = any(r["lossy"] for r in mine if r["series"] == s)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color,
                            marker=marker, linestyle="--" if lossy else "-", label=s)
            ax.set(title=dataset, xlabel=RATE_LABEL, ylabel=ylabel)
            # 0 (lossless) to 1 linear, then logarithmic: deltas 1-40 and lossy codecs'
            # errors in the thousands stay readable on one axis.
            ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
            ax.set_ylim(bottom=-0.5)
            rates = [r["bpppc"] for r in mine if r["bpppc"] > 0]
            if rates and max(rates) > LOG_RATE_SPAN * min(rates):
                ax.set_xscale("log")
        _figure_legend(fig, axes)
        save_figure(fig, out_png, out_pdf)


def plot_lossless(rd_csv: Path, out_png: Path, out_pdf: Path | None = None) -> None:
    """Bar chart of the lossless rates (delta = 0 rows, never lossy ones): one group per
    dataset, one bar per codec/model, each labelled with its value."""
    plt = _pyplot()
    rows = _rows_or_fail(rd_csv)
    if not any(r["delta"] is not None or r["lossy"] for r in rows):
        raise HsicompError(f"{rd_csv}: needs a delta column")
    lossless = [r for r in rows if r["delta"] == 0 and not r["lossy"]]
    if not lossless:
        raise HsicompError(f"{rd_csv}: no lossless (delta = 0) rows")
    datasets = sorted({r["dataset"] for r in lossless})
    series = rd_series(lossless)
    look = _looks(series)
    width = 0.8 / len(series)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * len(series) * len(datasets) + 1.2)
                                        + 1.6, 3.6), layout="constrained")
        top = max(r["bpppc"] for r in lossless)
        for i, s in enumerate(series):
            xs, heights = [], []
            for g, dataset in enumerate(datasets):
                rate = next((r["bpppc"] for r in lossless
                             if r["dataset"] == dataset and r["series"] == s), None)
                if rate is not None:
                    xs.append(g - 0.4 + width * (i + 0.5))
                    heights.append(rate)
            bars = ax.bar(xs, heights, width * 0.92, color=look[s][0], label=s)
            ax.bar_label(bars, fmt="%.3f", rotation=90, padding=2, fontsize=7)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_ylim(0, top * 1.22)
        ax.set_ylabel(f"lossless {RATE_LABEL}")
        ax.grid(axis="x", visible=False)
        _figure_legend(fig, [ax])
        save_figure(fig, out_png, out_pdf)


# --------------------------------------------------------------------------- one test patch


def _read_band_rates(path: Path) -> list[dict]:
    rows = read_table(path, BAND_RATE_COLUMNS, what="band-rates file", exact=True)
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            out.append({"codec": r["codec"], "model": r["model"], "patch_id": r["patch_id"],
                        "delta": int(r["delta"]), "band": int(r["band"]),
                        "wavelength_nm": float(r["wavelength_nm"]) if r["wavelength_nm"]
                        else None,
                        "bpppc_band": float(r["bpppc_band"])})
        except ValueError:
            raise HsicompError(f"{path}:{line}: malformed row") from None
    if not out:
        raise HsicompError(f"{path}: no rows to plot")
    return out


def plot_band_rates(band_csv: Path, out_png: Path, out_pdf: Path | None = None) -> None:
    """Draw the rate of every band of one patch, one line per codec/model."""
    plt = _pyplot()
    rows = _read_band_rates(Path(band_csv))
    series = rd_series(rows)
    look = _looks(series)
    patches = sorted({r["patch_id"] for r in rows})
    deltas = sorted({r["delta"] for r in rows})
    # By wavelength when the dataset knows every band's, in band order; the curve breaks
    # where the wavelength jumps (absorption bands left out) or goes back (a second
    # detector whose range overlaps the first, as EnMAP's VNIR and SWIR do).
    by_wavelength = all(r["wavelength_nm"] is not None for r in rows)
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(7.0, 3.6 + 0.22 * (len(series) // 3 + 1)),
                               layout="constrained")
        for s in series:
            pts = sorted((r["band"], r["wavelength_nm"], r["bpppc_band"])
                         for r in rows if series_label(r["codec"], r["model"]) == s)
            x = np.array([p[1] if by_wavelength else p[0] for p in pts], dtype=float)
            y = np.array([p[2] for p in pts], dtype=float)
            if by_wavelength and len(x) > 2:
                step = np.diff(x)
                breaks = np.flatnonzero((step <= 0) | (step > 3 * np.median(step)))
                x, y = np.insert(x, breaks + 1, np.nan), np.insert(y, breaks + 1, np.nan)
            color, marker = look[s]
            ax.plot(x, y, color=color, marker=marker,
                    markevery=max(1, len(pts) // 12), linewidth=1.0, label=s)
        ax.set(xlabel="wavelength (nm)" if by_wavelength else "band index in the patch",
               ylabel="rate (bits per sample of the band)",
               title=f"{', '.join(patches)}: {', '.join(_delta_text(d) for d in deltas)}")
        ax.set_ylim(bottom=0)
        _figure_legend(fig, [ax])
        save_figure(fig, out_png, out_pdf)


def plot_error_image(patch: DecodedPatch, label: str, delta: int, out_png: Path,
                     out_pdf: Path | None = None, band: int | None = None) -> dict:
    """Show one band of a test patch, its reconstruction and the absolute error map
    (digital numbers); return the patch's metrics (with ``bpppc``).

    ``band`` defaults to the middle band. A lossy codec has no error bound: its error map's
    scale is the measured maximum error.
    """
    rec, m = patch.record, patch.metrics
    if band is None:
        band = rec.bands // 2
    if not 0 <= band < rec.bands:
        raise HsicompError(f"band {band} out of range for {rec.bands} bands")
    original = patch.original[band].astype(np.int64)
    recon = patch.decoded[band].astype(np.int64)
    error = np.abs(original - recon)
    lo, hi = np.percentile(original, [1, 99])
    hi = max(hi, lo + 1)

    plt = _pyplot()
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.7), layout="constrained")
        grey = {"cmap": "gray", "vmin": lo, "vmax": hi, "interpolation": "nearest"}
        for ax, image, title in ((axes[0], original, "original"),
                                 (axes[1], recon, "reconstruction")):
            shown = ax.imshow(image, **grey)
            ax.set_title(f"{title}, band {band}")
            fig.colorbar(shown, ax=ax, shrink=0.85, label="digital number (DN)")
        top = max(m["max_abs_error"] if patch.lossy else delta, 1)
        if top <= 64:
            shown = axes[2].imshow(error, cmap=plt.get_cmap("viridis", top + 1), vmin=-0.5,
                                   vmax=top + 0.5, interpolation="nearest")
        else:
            shown = axes[2].imshow(error, cmap="viridis", vmin=0, vmax=top,
                                   interpolation="nearest")
        axes[2].set_title(f"absolute error, band {band}")
        bar = fig.colorbar(shown, ax=axes[2], shrink=0.85, label="absolute error (DN)")
        bar.locator = plt.MaxNLocator(integer=True)
        bar.update_ticks()
        for ax in axes:
            ax.set(xlabel="column (pixel)", ylabel="row (pixel)")
            ax.grid(False)
        psnr = "inf" if math.isinf(m["psnr"]) else f"{m['psnr']:.2f}"
        fig.suptitle(f"{rec.patch_id}, {label}, {_delta_text(delta, patch.lossy)}: "
                     f"{m['bpppc']:.3f} bpppc, "
                     f"PSNR {psnr} dB, max. error {m['max_abs_error']} DN (all bands)")
        save_figure(fig, out_png, out_pdf)
    return m


def plot_spectral_signature(original: np.ndarray, signatures: list[Signature],
                            wavelengths: dict[int, float], title: str, out_png: Path,
                            out_pdf: Path | None = None) -> None:
    """Draw one pixel's spectrum and each codec's reconstruction of it (top), and each
    reconstruction's error (bottom), against wavelength when every band's is known."""
    plt = _pyplot()
    bands = len(original)
    by_wavelength = all(b in wavelengths for b in range(bands))
    x = np.array([wavelengths[b] if by_wavelength else b for b in range(bands)], dtype=float)
    breaks = np.array([], dtype=int)
    if by_wavelength and bands > 2:
        step = np.diff(x)
        breaks = np.flatnonzero((step <= 0) | (step > 3 * np.median(step)))

    def broken(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.insert(x, breaks + 1, np.nan),
                np.insert(values.astype(float), breaks + 1, np.nan))

    series = [s.label for s in signatures]
    look = _looks(series)
    with plt.rc_context(STYLE):
        fig, (top, bottom) = plt.subplots(
            2, 1, figsize=(7.0, 5.6 + 0.22 * (len(series) // 3 + 1)), sharex=True,
            layout="constrained", gridspec_kw={"height_ratios": [2.2, 1]})
        top.plot(*broken(original), color="black", linewidth=1.8, label="original")
        for s in signatures:
            color, _ = look[s.label]
            name = f"{s.label} {s.model}: {s.metrics['bpppc']:.3f} bpppc, " \
                   f"{s.metrics['psnr']:.1f} dB"
            top.plot(*broken(s.spectrum), color=color, linewidth=1.0, label=name)
            bottom.plot(*broken(s.spectrum.astype(np.int64) - original.astype(np.int64)),
                        color=color, linewidth=0.9)
        top.set(ylabel="digital number (DN)", title=title)
        bottom.axhline(0, color="black", linewidth=0.6)
        bottom.set(xlabel="wavelength (nm)" if by_wavelength else "band index in the patch",
                   ylabel="reconstruction - original (DN)")
        _figure_legend(fig, [top, bottom])
        save_figure(fig, out_png, out_pdf)
