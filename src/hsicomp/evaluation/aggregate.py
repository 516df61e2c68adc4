"""Aggregate per-patch metrics CSVs into rate-distortion rows, one per dataset/codec/model/delta.

A lossy codec's point (``lossy`` true, empty ``delta``) is one row per dataset/codec/model.
Every bitstream a metrics row describes is checked first: it must still have the size and
sha256 recorded when it was verified.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import PATCH_COLUMNS, format_value, parse_bool
from hsicomp.io.table import read_table, write_table

RD_COLUMNS = [
    "dataset", "codec", "model", "delta", "lossy", "patches", "bands", "total_samples",
    "total_bytes", "bpppc", "mean_bpppc", "psnr", "mean_psnr", "mse", "mae", "max_abs_error",
    "sam_deg", "encode_samples_per_s", "decode_samples_per_s", "all_ok",
]
_INT_COLUMNS = ("bands", "rows", "cols", "bytes", "max_abs_error")
_FLOAT_COLUMNS = ("bpppc", "mse", "psnr", "mae", "sam_deg", "encode_s", "decode_s")


def _sort_key(row: dict) -> tuple:
    """(dataset, codec, model, delta or -1 for a lossy point, patch_id)."""
    delta = -1 if parse_bool(row["lossy"]) else int(row["delta"])
    return (row["dataset"], row["codec"], row["model"], delta, row["patch_id"])


def _read_rows(path: Path) -> list[dict]:
    """Read a per-patch metrics CSV as text rows, checking its columns and numbers."""
    rows = read_table(path, PATCH_COLUMNS[:-2], what="per-patch metrics file")
    if rows.columns == PATCH_COLUMNS[:-2]:
        raise HsicompError(f"{path}: metrics without bitstream checksums (written by an older "
                           f"hsicomp): verify the shard again")
    if rows.columns != PATCH_COLUMNS:
        raise HsicompError(f"{path}: not a per-patch metrics file (columns "
                           f"{', '.join(rows.columns)})")
    for line, row in enumerate(rows, start=2):
        try:
            for c in _INT_COLUMNS:
                int(row[c])
            for c in _FLOAT_COLUMNS:
                float(row[c])
            parse_bool(row["roundtrip_ok"])
            if parse_bool(row["lossy"]) != (row["delta"] == ""):
                raise ValueError("a lossy row has an empty delta, others an integer")
            if not row["file"] or len(row["sha256"]) != 64:
                raise ValueError("no bitstream file or sha256")
            int(row["sha256"], 16)
            _sort_key(row)
        except (TypeError, ValueError):
            raise HsicompError(f"{path}:{line}: malformed row") from None
    return rows


def _check_bitstream(row: dict, source: Path) -> None:
    """Raise when the row's bitstream is gone or is not the file verified in ``source``."""
    path = Path(row["file"])
    verified = int(row["bytes"])
    try:
        size = path.stat().st_size
        if size == verified:
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise HsicompError(f"{path}: bitstream missing (verified in {source})") from None
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read the bitstream ({exc.strerror})") from None
    if size != verified:
        raise HsicompError(f"{path}: {size} bytes, {verified} when verified in {source}")
    if digest != row["sha256"]:
        raise HsicompError(f"{path}: not the file verified in {source} (sha256 differs)")


def _safe_div(a: float, b: float) -> float:
    return a / b if b else math.inf


def _summarise(rows: list[dict]) -> dict:
    """One rate-distortion row for the per-patch rows of one dataset/codec/model/delta."""
    first = rows[0]
    bands = {int(r["bands"]) for r in rows}
    if len(bands) != 1:
        raise HsicompError(f"{first['dataset']} {first['codec']} {first['model']} "
                           f"delta={first['delta'] or '-'}: patches have different band counts "
                           f"{sorted(bands)}")
    samples = [int(r["bands"]) * int(r["rows"]) * int(r["cols"]) for r in rows]
    pixels = [int(r["rows"]) * int(r["cols"]) for r in rows]
    total_samples = sum(samples)
    total_bytes = sum(int(r["bytes"]) for r in rows)
    mse_values = [float(r["mse"]) for r in rows]
    psnrs = [float(r["psnr"]) for r in rows]
    mse = sum(m * n for m, n in zip(mse_values, samples, strict=True)) / total_samples
    # The peak is not stored: recover 10*log10(peak^2) from a patch with a finite PSNR.
    finite = [(p, m) for p, m in zip(psnrs, mse_values, strict=True) if math.isfinite(p)]
    if mse == 0 or not finite:
        psnr = math.inf
    else:
        p, m = max(finite, key=lambda pm: pm[1])
        psnr = p + 10.0 * math.log10(m) - 10.0 * math.log10(mse)
    finite_psnrs = [p for p in psnrs if math.isfinite(p)]
    return {
        "dataset": first["dataset"], "codec": first["codec"], "model": first["model"],
        "delta": first["delta"] and int(first["delta"]),
        "lossy": parse_bool(first["lossy"]),
        "patches": len(rows),
        "bands": bands.pop(),
        "total_samples": total_samples,
        "total_bytes": total_bytes,
        "bpppc": 8.0 * total_bytes / total_samples,
        "mean_bpppc": sum(8.0 * int(r["bytes"]) / n for r, n in zip(rows, samples, strict=True))
        / len(rows),
        "psnr": psnr,
        "mean_psnr": sum(finite_psnrs) / len(finite_psnrs) if finite_psnrs else math.inf,
        "mse": mse,
        "mae": sum(float(r["mae"]) * n for r, n in zip(rows, samples, strict=True))
        / total_samples,
        "max_abs_error": max(int(r["max_abs_error"]) for r in rows),
        "sam_deg": sum(float(r["sam_deg"]) * n for r, n in zip(rows, pixels, strict=True))
        / sum(pixels),
        "encode_samples_per_s": _safe_div(total_samples, sum(float(r["encode_s"]) for r in rows)),
        "decode_samples_per_s": _safe_div(total_samples, sum(float(r["decode_s"]) for r in rows)),
        "all_ok": all(parse_bool(r["roundtrip_ok"]) for r in rows),
    }


def aggregate(metric_csvs: list[Path], rd_out: Path, per_patch_out: Path) -> None:
    """Concatenate per-patch metrics into ``per_patch_out`` and summarise them into ``rd_out``.

    Both outputs are sorted by dataset, codec, model, delta (and patch_id); lossy rows keep
    their empty delta. Each row's bitstream must still be the verified file (size and
    sha256). Both outputs are written atomically; on any error both are removed, so that
    neither is left describing other files.
    """
    try:
        _aggregate(metric_csvs, Path(rd_out), Path(per_patch_out))
    except BaseException:
        Path(rd_out).unlink(missing_ok=True)
        Path(per_patch_out).unlink(missing_ok=True)
        raise


def _aggregate(metric_csvs: list[Path], rd_out: Path, per_patch_out: Path) -> None:
    rows = []
    for path in map(Path, metric_csvs):
        for row in _read_rows(path):
            _check_bitstream(row, path)
            rows.append(row)
    rows.sort(key=_sort_key)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_sort_key(row)[:4], []).append(row)
    for key, members in groups.items():
        ids = [r["patch_id"] for r in members]
        if len(set(ids)) != len(ids):
            raise HsicompError(f"{' '.join(map(str, key))}: a patch appears more than once "
                               f"in the metrics files")
    summary = [_summarise(members) for members in groups.values()]

    write_table(per_patch_out, rows, PATCH_COLUMNS)
    write_table(rd_out, summary, RD_COLUMNS, format_value)
