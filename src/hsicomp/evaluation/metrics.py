"""Distortion and rate measures between an original and a decoded cube, and their CSV form."""

from __future__ import annotations

import math

import numpy as np

#: Columns of the per-patch metrics CSV written by ``verify-shard``. A lossy codec's rows
#: (no maximum-error guarantee) have an empty ``delta`` and ``lossy`` true; ``file`` is the
#: verified bitstream (as the path was given) and ``sha256`` the hash of its bytes.
PATCH_COLUMNS = [
    "dataset", "codec", "model", "delta", "lossy", "patch_id", "bands", "rows", "cols", "bytes",
    "bpppc", "mse", "psnr", "mae", "max_abs_error", "sam_deg", "encode_s", "decode_s",
    "roundtrip_ok", "file", "sha256",
]


def psnr_db(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio in dB for a mean squared error; inf when ``mse`` is 0."""
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def spectral_angle_deg(original: np.ndarray, decoded: np.ndarray) -> float:
    """Mean spectral angle (degrees) between per-pixel spectra of two (bands, rows, cols) cubes.

    Pixels where either spectrum is all zero have no direction and are left out of the mean;
    the result is 0.0 when no pixel is left.
    """
    a = original.reshape(original.shape[0], -1).astype(np.float64)
    b = decoded.reshape(decoded.shape[0], -1).astype(np.float64)
    norm_a = np.sqrt(np.einsum("ij,ij->j", a, a))
    norm_b = np.sqrt(np.einsum("ij,ij->j", b, b))
    valid = (norm_a > 0) & (norm_b > 0)
    if not valid.any():
        return 0.0
    ua = a[:, valid] / norm_a[valid]
    ub = b[:, valid] / norm_b[valid]
    # 2*atan2(|ua - ub|, |ua + ub|) is accurate for small and near-90/180 degree angles alike.
    diff = np.sqrt(np.einsum("ij,ij->j", ua - ub, ua - ub))
    total = np.sqrt(np.einsum("ij,ij->j", ua + ub, ua + ub))
    angles = 2.0 * np.arctan2(diff, total)
    return float(np.degrees(angles.mean()))


def compare(original: np.ndarray, decoded: np.ndarray, peak: float) -> dict:
    """Distortion of ``decoded`` against ``original`` (both (bands, rows, cols) integer cubes).

    Returns mse, psnr (dB for ``peak``), mae, max_abs_error (int) and sam_deg.
    """
    if original.shape != decoded.shape:
        raise ValueError(f"shape mismatch: {original.shape} vs {decoded.shape}")
    if original.ndim != 3:
        raise ValueError(f"expected (bands, rows, cols) cubes, got shape {original.shape}")
    diff = original.astype(np.int64) - decoded.astype(np.int64)
    n = diff.size
    abs_diff = np.abs(diff)
    # Per-band int64 sums are exact; summing them as Python ints cannot overflow.
    sse = sum(int(s) for s in (diff * diff).reshape(diff.shape[0], -1).sum(axis=1))
    sae = sum(int(s) for s in abs_diff.reshape(diff.shape[0], -1).sum(axis=1))
    mse = sse / n
    return {
        "mse": mse,
        "psnr": psnr_db(mse, peak),
        "mae": sae / n,
        "max_abs_error": int(abs_diff.max()) if n else 0,
        "sam_deg": spectral_angle_deg(original, decoded),
    }


def bits_per_sample(n_bytes: int, shape: tuple[int, ...]) -> float:
    """Rate in bits per sample: 8 * bytes / (bands * rows * cols)."""
    return 8.0 * n_bytes / math.prod(shape)


def format_value(value: object, digits: int = 6) -> str:
    """CSV text for a value: floats with ``digits`` significant digits, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def parse_bool(text: str) -> bool:
    """Read a boolean written by :func:`format_value` (also accepts 1/0 and True/False)."""
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {text!r}")
