"""Bjontegaard delta rate (BD-rate) of every rate-distortion curve against reference codecs,
at equal PSNR and at equal spectral angle (SAM).

BD-rate is the mean relative difference in rate at equal quality over the quality range both
curves cover: the natural logarithm of the rate is interpolated as a function of the quality
with a piecewise cubic Hermite (PCHIP, Fritsch-Carlson slopes as in ``scipy``'s
``PchipInterpolator``) through the measured points, both interpolants are integrated exactly
over the shared range, and the mean log-rate difference ``d`` gives
``bd_rate_percent = 100 (exp(d) - 1)``. Negative values mean fewer bits than the reference
for the same quality. The quality is the PSNR (dB) for metric ``psnr`` and the negated mean
spectral angle (degrees; smaller is better) for metric ``sam``; ``range_low`` and
``range_high`` give the shared range in the metric's own unit.

A curve is a dataset and a legend series (:func:`hsicomp.evaluation.rd_table.read_rd`): one
codec label and model, or for a lossy codec the label with all its models (one point per
rate point; the ``model`` column then lists them joined by ``+``). Only lossy points (finite
PSNR) are used: lossless points have ``psnr = inf`` and SAM 0. As in Bjontegaard's method,
each curve needs at least ``MIN_POINTS`` (4) measured points inside the shared range: with
fewer, the interpolation, not the measurements, decides the number. Curves that cannot be
compared get an empty ``bd_rate_percent`` and a ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import format_value
from hsicomp.evaluation.rd_table import read_rd, series_label, series_sort_key
from hsicomp.io.table import write_table

#: Columns of the BD-rate CSV.
BDRATE_COLUMNS = [
    "dataset", "codec", "model", "reference", "metric", "points", "reference_points",
    "range_low", "range_high", "bd_rate_percent", "reason",
]
#: The quality measures of a BD-rate: name -> (rd row -> quality, larger is better).
METRICS = {"psnr": lambda r: r["psnr"], "sam": lambda r: -r["sam_deg"]}
#: A quality as the metric's own value (dB, degrees).
SHOWN = {"psnr": float, "sam": lambda q: -q}


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
    """(quality, log rate) arrays of a curve's finite-quality (rate, quality) points, by
    quality. Points sharing a quality keep the lowest rate.
    """
    best: dict[float, float] = {}
    for rate, quality in points:
        if math.isfinite(quality):
            best[quality] = min(rate, best.get(quality, math.inf))
    qualities = sorted(best)
    return np.array(qualities, dtype=np.float64), np.log([best[q] for q in qualities])


def bd_rate(test: list[tuple[float, float]], reference: list[tuple[float, float]],
            min_points: int = MIN_POINTS, metric: str = "PSNR",
            shown: Callable[[float], float] = float) -> tuple[float, float, float]:
    """BD-rate in percent of ``test`` against ``reference``, with the quality range used.

    Both are lists of (rate, quality) points (quality: larger is better, e.g. PSNR);
    returns (percent, low, high). Raises ValueError with the reason when a curve has fewer
    than ``min_points`` finite-quality points inside the range both curves cover (or the
    curves share no range); ``metric`` names the quality in those reasons and ``shown``
    turns a quality into the value they show (e.g. a negated angle back into degrees).
    """
    xt, yt = curve_points(test)
    xr, yr = curve_points(reference)
    for name, x in (("reference has", xr), ("curve has", xt)):
        if len(x) < max(min_points, 2):
            raise ValueError(f"{name} {len(x)} finite-{metric} point(s), needs {min_points}")
    low, high = max(xt[0], xr[0]), min(xt[-1], xr[-1])
    if not high > low:
        raise ValueError(f"no shared {metric} range (curve {_span(xt, shown)}, "
                         f"reference {_span(xr, shown)})")
    for name, x in (("reference has", xr), ("curve has", xt)):
        inside = int(((x >= low) & (x <= high)).sum())
        if inside < min_points:
            raise ValueError(f"{name} {inside} point(s) in the shared {metric} range "
                             f"{_span(np.array([low, high]), shown)}, needs {min_points}")
    diff = (pchip_integral(xt, yt, low, high) - pchip_integral(xr, yr, low, high)) \
        / (high - low)
    return 100.0 * math.expm1(diff), float(low), float(high)


def _span(x: np.ndarray, shown: Callable[[float], float]) -> str:
    """``low..high`` of a quality range, in the values ``shown`` gives."""
    low, high = sorted((shown(x[0]), shown(x[-1])))
    return f"{low:.3f}..{high:.3f}"


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


def bdrate_table(rows: list[dict], references: str | list[str], path: Path = Path("input"),
                 metrics: tuple[str, ...] = ("psnr",)) -> list[dict]:
    """BD-rate rows (see :data:`BDRATE_COLUMNS`) of every dataset/series curve against each
    reference and each metric (``psnr``, ``sam``; see :data:`METRICS`).

    ``rows`` come from :func:`hsicomp.evaluation.rd_table.read_rd`; a reference is a codec
    label (or ``"label model"`` for a codec evaluated with several models).
    """
    if isinstance(references, str):
        references = [references]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise HsicompError(f"unknown BD-rate metric {unknown[0]!r} (known: "
                           f"{', '.join(METRICS)})")
    if "sam" in metrics and any(r.get("sam_deg") is None for r in rows):
        raise HsicompError(f"{path}: no sam_deg column for the SAM BD-rate")
    ref_series = [_find_reference(rows, reference, path) for reference in references]
    curves: dict[tuple[str, str], dict] = {}
    for r in sorted(rows, key=lambda r: (r["dataset"], *series_sort_key(r))):
        if not r["bpppc"] > 0:
            raise HsicompError(f"{path}: {r['dataset']} {r['series']}: rate {r['bpppc']} "
                               f"is not positive")
        curve = curves.setdefault((r["dataset"], r["series"]),
                                  {"codec": r["codec"], "models": [], "rows": []})
        if r["model"] not in curve["models"]:
            curve["models"].append(r["model"])
        curve["rows"].append(r)

    def points(curve_rows: list[dict], metric: str) -> list[tuple[float, float]]:
        return [(r["bpppc"], METRICS[metric](r)) for r in curve_rows
                if math.isfinite(r["psnr"])]

    out = []
    for reference in ref_series:
        for metric in metrics:
            name = metric.upper()
            for (dataset, _), curve in curves.items():
                ref = curves.get((dataset, reference))
                mine = points(curve["rows"], metric)
                theirs = None if ref is None else points(ref["rows"], metric)
                row = {"dataset": dataset, "codec": curve["codec"],
                       "model": "+".join(curve["models"]), "reference": reference,
                       "metric": metric, "points": len(curve_points(mine)[0]),
                       "reference_points": "" if theirs is None
                       else len(curve_points(theirs)[0]),
                       "range_low": "", "range_high": "", "bd_rate_percent": "", "reason": ""}
                if theirs is None:
                    row["reason"] = "no reference curve for this dataset"
                else:
                    try:
                        percent, low, high = bd_rate(mine, theirs, metric=name,
                                                     shown=SHOWN[metric])
                    except ValueError as exc:
                        row["reason"] = str(exc)
                    else:
                        if metric == "sam":  # back to degrees: the worst quality is the largest
                            low, high = -high, -low
                        row.update(range_low=low, range_high=high, bd_rate_percent=percent)
                out.append(row)
    return out


def write_bdrate(rd_csv: Path, references: str | list[str], out_csv: Path,
                 metrics: tuple[str, ...] = ("psnr",)) -> list[dict]:
    """Compute the BD-rate table of ``rd_csv`` against ``references`` and write it
    atomically."""
    rd_csv = Path(rd_csv)
    table = bdrate_table(read_rd(rd_csv), references, rd_csv, metrics)
    write_table(out_csv, table, BDRATE_COLUMNS, format_value)
    return table
