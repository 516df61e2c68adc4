"""Reading a rate-distortion table (``aggregate``'s rd_all.csv) and naming its curves.

A curve (legend series) is one codec label and model, e.g. ``linerwkv-arith XS``; codecs
without a model (``-``) are named by their label alone, and a lossy codec's points (one per
trained model) make one curve per label.
"""

from __future__ import annotations

from pathlib import Path

from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import parse_bool
from hsicomp.io.table import read_table

_NO_MODEL = ("", "none", "-")
#: Order of the LineRWKV sizes in legends (other model names follow, alphabetically).
_MODEL_ORDER = {"XS": 0, "S": 1, "M": 2, "L": 3}
_RD_REQUIRED = ("dataset", "codec", "model", "bpppc", "psnr")


def series_label(codec: str, model: str) -> str:
    """Legend label of a codec/model pair: ``codec`` alone, or ``codec model``."""
    return codec if model.lower() in _NO_MODEL or model == codec else f"{codec} {model}"


def series_sort_key(row: dict) -> tuple:
    """Sort key of a row's curve: codec label, then model size."""
    model = row["model"]
    return (row["codec"], _MODEL_ORDER.get(model, len(_MODEL_ORDER)), model)


def rd_series(rows: list[dict]) -> list[str]:
    """Legend labels of the curves (a row's ``series``, else its codec/model pair), in
    drawing order."""
    ordered = sorted(rows, key=series_sort_key)
    return list(dict.fromkeys(r.get("series") or series_label(r["codec"], r["model"])
                              for r in ordered))


def read_rd(path: Path) -> list[dict]:
    """Rows of a rate-distortion CSV (``aggregate``'s rd_all.csv).

    Each row has dataset, codec, model, lossy, series (legend label), bpppc and psnr, and
    delta (int), max_abs_error and sam_deg (float) when the file has those columns (else
    None).
    Lossy rows (``lossy`` true) have delta None, and their series is the codec label alone:
    all models of a lossy codec (e.g. one per trained lambda) make one curve.
    """
    rows = read_table(path, _RD_REQUIRED, what="rate-distortion file")
    columns = rows.columns
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            lossy = "lossy" in columns and parse_bool(r["lossy"])
            out.append({
                "dataset": r["dataset"], "codec": r["codec"], "model": r["model"],
                "lossy": lossy,
                "series": r["codec"] if lossy else series_label(r["codec"], r["model"]),
                "bpppc": float(r["bpppc"]), "psnr": float(r["psnr"]),
                "delta": int(r["delta"]) if "delta" in columns and not lossy else None,
                "max_abs_error": float(r["max_abs_error"]) if "max_abs_error" in columns
                else None,
                "sam_deg": float(r["sam_deg"]) if "sam_deg" in columns else None,
            })
        except ValueError:
            raise HsicompError(f"{path}:{line}: malformed row") from None
    return out
