"""Bjontegaard delta rate (BD-rate) of every rate-distortion curve against a reference codec.

BD-rate is the mean relative difference in rate at equal PSNR over the PSNR range both
curves cover: the natural logarithm of the rate is interpolated as a function of PSNR with
a piecewise cubic Hermite (PCHIP, Fritsch-Carlson slopes as in ``scipy``'s
``PchipInterpolator``) through the measured points, both interpolants are integrated
exactly over the shared range ``[psnr_low, psnr_high]``, and the mean log-rate difference
``d`` gives ``bd_rate_percent = 100 (exp(d) - 1)``. Negative values mean fewer bits than the
reference for the same quality.

A curve is a dataset and a legend series (:func:`hsicomp.evaluation.rd_table.read_rd`): one
codec label
and model, or for a lossy codec the label with all its models (one point per trained
lambda; the ``model`` column then lists them joined by ``+``). Only points with a finite
PSNR are used (lossless points have ``psnr = inf``). As in Bjontegaard's method, each curve
needs at least ``MIN_POINTS`` (4) measured points inside the shared PSNR range: with fewer,
the interpolation, not the measurements, decides the number. Curves that cannot be compared
get an empty ``bd_rate_percent`` and a ``reason``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import format_value
from hsicomp.evaluation.rd_table import read_rd, series_label, series_sort_key
from hsicomp.io.table import write_table

#: Columns of the BD-rate CSV.
BDRATE_COLUMNS = [
    "dataset", "codec", "model", "reference", "points", "reference_points", "psnr_low",
    "psnr_high", "bd_rate_percent", "reason",
]


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slopes at the knots of the shape-preserving PCHIP interpolant through (x, y).

    ``x`` must be strictly increasing with at least two values; two points give a line.
    """
    h = np.diff(x)
    m = np.diff(y) / h
    if len(x) == 2:
        return np.array([m[0], m[0]])
    d = np.zeros_like(y)
    # interior knots: weighted harmonic mean of the neighbouring secants, 0 at extrema
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same = m[:-1] * m[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        hm = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
    d[1:-1] = np.where(same, hm, 0.0)
    d[0] = _edge_slope(h[0], h[1], m[0], m[1])
    d[-1] = _edge_slope(h[-1], h[-2], m[-1], m[-2])
    return d


def _edge_slope(h0: float, h1: float, m0: float, m1: float) -> float:
    """One-sided three-point slope at an end knot, limited to keep the shape."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


def pchip_integral(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Exact integral over [low, high] (inside [x[0], x[-1]]) of the PCHIP through (x, y)."""
    return _antiderivative(x, y, high) - _antiderivative(x, y, low)


def _antiderivative(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """Integral of the PCHIP interpolant from x[0] to ``at``."""
    d = pchip_slopes(x, y)
    h = np.diff(x)
    k = int(np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2))
    # whole segments before k: h (y0 + y1) / 2 + h**2 (d0 - d1) / 12
    whole = h[:k] * (y[:k] + y[1:k + 1]) / 2 + h[:k] ** 2 * (d[:k] - d[1:k + 1]) / 12
    # part of segment k, t in [0, 1]: integrals of the cubic Hermite basis from 0 to t
    t = (at - x[k]) / h[k]
    part = (y[k] * (t**4 / 2 - t**3 + t) + h[k] * d[k] * (t**4 / 4 - 2 * t**3 / 3 + t**2 / 2)
            + y[k + 1] * (t**3 - t**4 / 2) + h[k] * d[k + 1] * (t**4 / 4 - t**3 / 3))
    return float(whole.sum() + h[k] * part)


#: Measured points each curve needs inside the shared PSNR range.
MIN_POINTS = 4


def curve_points(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(PSNR, log rate) arrays of a curve's finite-PSNR (rate, PSNR) points, by PSNR.

    Points sharing a PSNR keep the lowest rate.
    """
    best: dict[float, float] = {}
    for rate, psnr in points:
        if math.isfinite(psnr):
            best[psnr] = min(rate, best.get(psnr, math.inf))
    psnrs = sorted(best)
    return np.array(psnrs, dtype=np.float64), np.log([best[p] for p in psnrs])


def bd_rate(test: list[tuple[float, float]], reference: list[tuple[float, float]],
            min_points: int = MIN_POINTS) -> tuple[float, float, float]:
    """BD-rate in percent of ``test`` against ``reference``, with the PSNR range used.

    Both are lists of (rate, PSNR) points; returns (percent, psnr_low, psnr_high). Raises
    ValueError with the reason when a curve has fewer than ``min_points`` finite-PSNR points
    inside the PSNR range both curves cover (or the curves share no range).
    """
    xt, yt = curve_points(test)
    xr, yr = curve_points(reference)
    for name, x in (("reference has", xr), ("curve has", xt)):
        if len(x) < max(min_points, 2):
            raise ValueError(f"{name} {len(x)} finite-PSNR point(s), needs {min_points}")
    low, high = max(xt[0], xr[0]), min(xt[-1], xr[-1])
    if not high > low:
        raise ValueError(f"no shared PSNR range (curve {xt[0]:.3f}..{xt[-1]:.3f} dB, "
                         f"reference {xr[0]:.3f}..{xr[-1]:.3f} dB)")
    for name, x in (("reference has", xr), ("curve has", xt)):
        inside = int(((x >= low) & (x <= high)).sum())
        if inside < min_points:
            raise ValueError(f"{name} {inside} point(s) in the shared PSNR range "
                             f"{low:.3f}..{high:.3f} dB, needs {min_points}")
    diff = (pchip_integral(xt, yt, low, high) - pchip_integral(xr, yr, low, high)) \
        / (high - low)
    return 100.0 * math.expm1(diff), float(low), float(high)


def _find_reference(rows: list[dict], reference: str, path: Path) -> str:
    """The series label of the reference: a codec label with one model, or 'label model'."""
    labels = {r["series"] for r in rows}
    if reference in labels:
        return reference
    models = sorted({r["model"] for r in rows if r["codec"] == reference})
    if not models:
        codecs = ", ".join(sorted({r["codec"] for r in rows}))
        raise HsicompError(f"{path}: reference codec {reference!r} not found (codecs: "
                           f"{codecs})")
    raise HsicompError(f"{path}: reference codec {reference!r} has several models "
                       f"({', '.join(models)}): name one, e.g. "
                       f"{series_label(reference, models[0])!r}")


def bdrate_table(rows: list[dict], reference: str, path: Path = Path("input")) -> list[dict]:
    """BD-rate rows (see :data:`BDRATE_COLUMNS`) of every dataset/series curve.

    ``rows`` come from :func:`hsicomp.evaluation.rd_table.read_rd`; ``reference`` is a codec
    label (or
    ``"label model"`` for a codec evaluated with several models).
    """
    ref_series = _find_reference(rows, reference, path)
    curves: dict[tuple[str, str], dict] = {}
    for r in sorted(rows, key=lambda r: (r["dataset"], *series_sort_key(r))):
        if not r["bpppc"] > 0:
            raise HsicompError(f"{path}: {r['dataset']} {r['series']}: rate {r['bpppc']} "
                               f"is not positive")
        curve = curves.setdefault((r["dataset"], r["series"]),
                                  {"codec": r["codec"], "models": [], "points": []})
        if r["model"] not in curve["models"]:
            curve["models"].append(r["model"])
        curve["points"].append((r["bpppc"], r["psnr"]))
    refs = {dataset: curve["points"] for (dataset, series), curve in curves.items()
            if series == ref_series}
    out = []
    for (dataset, _), curve in curves.items():
        points = curve["points"]
        ref = refs.get(dataset)
        row = {"dataset": dataset, "codec": curve["codec"], "model": "+".join(curve["models"]),
               "reference": ref_series,
               "points": len(curve_points(points)[0]),
               "reference_points": "" if ref is None else len(curve_points(ref)[0]),
               "psnr_low": "", "psnr_high": "", "bd_rate_percent": "", "reason": ""}
        if ref is None:
            row["reason"] = "no reference curve for this dataset"
        else:
            try:
                percent, low, high = bd_rate(points, ref)
            except ValueError as exc:
                row["reason"] = str(exc)
            else:
                row.update(psnr_low=low, psnr_high=high, bd_rate_percent=percent)
        out.append(row)
    return out


def write_bdrate(rd_csv: Path, reference: str, out_csv: Path) -> list[dict]:
    """Compute the BD-rate table of ``rd_csv`` against ``reference`` and write it atomically."""
    rd_csv = Path(rd_csv)
    table = bdrate_table(read_rd(rd_csv), reference, rd_csv)
    write_table(out_csv, table, BDRATE_COLUMNS, format_value)
    return table
