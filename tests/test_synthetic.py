"""Tests for the synthetic EnMAP-like cube generator."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from helpers import ENMAP_DIR as REAL_DIR

from hsicomp.data.synthetic import enmap_wavelengths, generate_cube
from hsicomp.io.bands import ENMAP_202

REAL_TILES = sorted(REAL_DIR.glob("*.tif"))


def _sha(cube: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(cube).tobytes()).hexdigest()


def _entropy(values: np.ndarray) -> float:
    """Zero-order entropy (bits per sample) of integer values."""
    _, counts = np.unique(values.ravel(), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _mean_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the Pearson correlation between rows of a and b."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return float(np.mean(num / den))


def _check_realism(cube: np.ndarray) -> None:
    """Statistics that real EnMAP L2A tiles (202 bands) satisfy."""
    x = cube.astype(np.int64)
    bands = x.shape[0]
    flat = x.reshape(bands, -1)
    h0 = _entropy(x)
    h_band = _entropy(np.diff(x, axis=0))
    assert 8.0 < h0 < 12.0
    assert h_band < h0 - 2.0
    assert _mean_corr(flat[1:], flat[:-1]) > 0.9
    rows_corr = _mean_corr(x[:, 1:].reshape(bands, -1), x[:, :-1].reshape(bands, -1))
    cols_corr = _mean_corr(x[:, :, 1:].reshape(bands, -1), x[:, :, :-1].reshape(bands, -1))
    assert rows_corr > 0.5
    assert cols_corr > 0.5
    assert flat.std(axis=1).min() > 5.0


def _spectral_angles(cube: np.ndarray) -> np.ndarray:
    """Angle (degrees) between each non-zero pixel spectrum and the mean spectrum."""
    flat = cube.reshape(cube.shape[0], -1).astype(np.float64)
    flat = flat[:, np.any(flat != 0, axis=0)]
    ref = flat.mean(axis=1)
    cos = ref @ flat / (np.linalg.norm(flat, axis=0) * np.linalg.norm(ref))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def test_same_seed_same_bytes():
    assert _sha(generate_cube(7, rows=32, cols=32)) == _sha(generate_cube(7, rows=32, cols=32))


def test_different_seed_different_cube():
    a = generate_cube(1, rows=32, cols=32)
    b = generate_cube(2, rows=32, cols=32)
    assert _sha(a) != _sha(b)
    # Not just a few samples apart: the scenes differ.
    assert np.mean(a != b) > 0.5


@pytest.mark.parametrize(
    ("bands", "rows", "cols", "bit_depth"),
    [(202, 32, 32, 14), (50, 16, 24, 14), (202, 8, 40, 16), (3, 1, 5, 12)],
)
def test_dtype_shape_range(bands, rows, cols, bit_depth):
    cube = generate_cube(3, bands=bands, rows=rows, cols=cols, bit_depth=bit_depth)
    assert cube.dtype == np.uint16
    assert cube.shape == (bands, rows, cols)
    assert int(cube.max()) <= 2**bit_depth - 1


def test_bit_depth_clips():
    full = generate_cube(0, rows=32, cols=32, bit_depth=14)
    clipped = generate_cube(0, rows=32, cols=32, bit_depth=12)
    assert int(full.max()) > 4095
    assert int(clipped.max()) == 4095
    np.testing.assert_array_equal(clipped, np.minimum(full, 4095))


def test_values_look_like_reflectance():
    cube = generate_cube(4, rows=32, cols=32)
    assert 500 < cube.mean() < 3000
    assert int(cube.max()) < 8000
    assert np.mean(cube == 0) < 0.01


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_cube(0, rows=0)
    with pytest.raises(ValueError):
        generate_cube(0, bit_depth=17)
    with pytest.raises(ValueError):
        enmap_wavelengths(0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_is_realistic(seed):
    _check_realism(generate_cube(seed, rows=32, cols=32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spectra_vary_across_pixels(seed):
    angles = _spectral_angles(generate_cube(seed, rows=32, cols=32))
    assert angles.std() > 1.0
    assert angles.max() > 5.0


@pytest.mark.skipif(not REAL_TILES, reason="real EnMAP tiles not available")
@pytest.mark.parametrize("path", REAL_TILES, ids=lambda p: p.stem)
def test_real_tiles_pass_the_same_checks(path):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(path) as src:
        cube = src.read()[list(ENMAP_202)]
    assert cube.min() >= 0
    _check_realism(cube.astype(np.int64))
    assert _spectral_angles(cube).std() > 1.0


def test_enmap_wavelengths():
    wl = enmap_wavelengths()
    assert wl.shape == (202,)
    assert 410 < wl[0] < 425
    assert 2430 < wl[-1] < 2460
    # Sensor order: VNIR rises to ~990 nm, then the SWIR detector restarts near 900 nm.
    back = np.flatnonzero(np.diff(wl) < 0)
    assert back.size == 1
    vnir, swir = wl[: back[0] + 1], wl[back[0] + 1 :]
    assert np.all(np.diff(vnir) > 3) and np.all(np.diff(vnir) < 10)
    assert 980 < vnir[-1] < 1000 and 895 < swir[0] < 910
    steps = np.diff(swir)
    assert np.median(steps) == pytest.approx(10.0, abs=2.0)
    # The deep water-vapour regions are dropped.
    assert not np.any((wl > 1330) & (wl < 1500))
    assert not np.any((wl > 1800) & (wl < 1950))
    assert len(ENMAP_202) == wl.size


def test_other_band_counts_spread_evenly():
    wl = enmap_wavelengths(11)
    np.testing.assert_allclose(wl, np.linspace(400.0, 2500.0, 11))
