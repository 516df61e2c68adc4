"""Raw band-sequential (BSQ) cubes: uint16 little-endian, file order (band, row, col)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_write_bytes

BSQ_DTYPE = np.dtype("<u2")


def read_bsq(path: str | os.PathLike, bands: int, rows: int, cols: int) -> np.ndarray:
    """Read a uint16 LE BSQ file of the given dimensions as a (bands, rows, cols) array."""
    path = Path(path)
    expected = bands * rows * cols * BSQ_DTYPE.itemsize
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise HsicompError(f"{path}: file not found") from None
    if size != expected:
        raise HsicompError(
            f"{path}: size {size} bytes does not match {bands}x{rows}x{cols} uint16 "
            f"({expected} bytes)"
        )
    data = np.fromfile(path, dtype=BSQ_DTYPE)
    return data.reshape(bands, rows, cols).astype(np.uint16, copy=False)


def bsq_bytes(cube: np.ndarray) -> bytes:
    """Serialise a (bands, rows, cols) integer cube as uint16 LE BSQ bytes."""
    if cube.ndim != 3:
        raise HsicompError(f"expected a 3-D cube (bands, rows, cols), got shape {cube.shape}")
    if cube.dtype != np.uint16:
        raise HsicompError(f"expected uint16 samples, got {cube.dtype}")
    return np.ascontiguousarray(cube, dtype=BSQ_DTYPE).tobytes()


def write_bsq(path: str | os.PathLike, cube: np.ndarray) -> str:
    """Write a uint16 cube as BSQ atomically; return the sha256 of the written bytes."""
    data = bsq_bytes(cube)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def cube_sha256(cube: np.ndarray) -> str:
    """sha256 of the cube's canonical BSQ bytes (the same value :func:`write_bsq` returns)."""
    return hashlib.sha256(bsq_bytes(cube)).hexdigest()
