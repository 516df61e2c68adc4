"""Reproducible float32 LineRWKV kernel: elementary functions, torch agreement, bit-exactness."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from helpers import ENMAP_DIR, perturbed_model

from hsicomp.io.bands import ENMAP_202
from hsicomp.models import SIZES, LineRWKV, LineRWKVConfig
from hsicomp.models.kernel import (
    ARITHMETIC_VERSION,
    KernelStepper,
    KernelWeights,
    erf32,
    exp32,
    gelu32,
    predict_cube,
    predict_stepwise,
    sigmoid32,
)

ENMAP_TILE = ENMAP_DIR / "enmap_potsdam_tile_128_128.tif"


def _hash_uniform(n: int, seed: int) -> np.ndarray:
    """``n`` values in [-0.5, 0.5) from integer mixing alone, identical on every platform.

    Each value has 24 fraction bits, so it is exact in float32.
    """
    h = (np.arange(n, dtype=np.uint64) + np.uint64(seed)) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(40)).astype(np.float64) / 2.0**24 - 0.5


def _hashed_state(config: LineRWKVConfig, seed: int) -> dict[str, np.ndarray]:
    """A LineRWKV state dict built from ``_hash_uniform`` (no library random generator)."""
    state = {}
    for k, (key, value) in enumerate(LineRWKV(config).state_dict().items()):
        shape = tuple(value.shape)
        u = _hash_uniform(math.prod(shape), seed + 7919 * k).reshape(shape)
        if key.endswith("time_decay"):
            v = -5.0 + 8.0 * (u + 0.5)
        elif key.endswith("time_first"):
            v = -1.2 + u
        elif "time_mix" in key:
            v = u + 0.5
        elif ("norm" in key or ".ln" in key) and key.endswith("weight"):
            v = 1.0 + 0.4 * u
        elif key.endswith("bias"):
            v = 0.2 * u
        else:
            v = u * 2.0 / math.sqrt(math.prod(shape[1:]))
        state[key] = v.astype(np.float32)
    return state


def _hashed_cube(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A cube of smooth-ish values of order 1 from ``_hash_uniform`` (exact float64 sums)."""
    u = _hash_uniform(math.prod(shape), seed).reshape(shape)
    return (np.cumsum(u, axis=2) + np.cumsum(u, axis=0)).astype(np.float32)


def _random_cube(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(shape), axis=2) * 0.4 + rng.standard_normal(shape)
    return x.astype(np.float32)


def _torch_predict(model: LineRWKV, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)[None])[0].numpy()


# ---------------------------------------------------------------------------------------------
# Elementary functions


def test_exp_against_float64() -> None:
    x = np.concatenate([np.linspace(-64.0, 88.0, 200_001), np.linspace(-1.0, 1.0, 20_001)])
    x = x.astype(np.float32)
    got = exp32(x).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    assert np.all(np.abs(got - ref) <= np.spacing(ref.astype(np.float32)))  # within 1 ulp
    assert exp32(np.zeros(1, np.float32))[0] == 1.0
    # Far below the range (the WKV state starts at -1e30): exactly 0, never NaN or inf.
    below = np.nextafter(np.float32(-64.0), np.float32(-65.0))
    low = np.array([-1e30, -3.4e38, -1e6, -100.0, -64.5, below], np.float32)
    assert np.all(exp32(low) == 0.0)
    high = exp32(np.array([88.0, 100.0, 1e30], np.float32))
    assert np.all(np.isfinite(high)) and np.all(high == high[0])


def test_sigmoid_against_float64() -> None:
    x = np.linspace(-100.0, 100.0, 200_001).astype(np.float32)
    got = sigmoid32(x).astype(np.float64)
    ref = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert np.max(np.abs(got - ref)) < 2e-7
    keep = ref > 1e-25  # below, the clamped argument -60 bounds the value
    assert np.max(np.abs(got - ref)[keep] / ref[keep]) < 5e-7
    extreme = sigmoid32(np.array([-1e30, 1e30], np.float32))
    assert 0.0 < extreme[0] < 1e-25 and extreme[1] == 1.0


def test_erf_and_gelu_against_float64() -> None:
    x = np.linspace(-12.0, 12.0, 240_001).astype(np.float32)
    x64 = x.astype(np.float64)
    erf_ref = np.array([math.erf(v) for v in x64])
    assert np.max(np.abs(erf32(x) - erf_ref)) < 2e-7
    gelu_ref = 0.5 * x64 * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x64])
    err = np.abs(gelu32(x).astype(np.float64) - gelu_ref)
    assert np.max(err / np.maximum(1.0, np.abs(x64))) < 2e-7
    assert np.all(np.isfinite(gelu32(np.array([-1e30, 1e30], np.float32))))


# ---------------------------------------------------------------------------------------------
# Weights


def test_weights_from_model_and_state_dict() -> None:
    model = perturbed_model("S", 0)
    from_model = KernelWeights.from_model(model)
    state = {k: v.double() for k, v in model.state_dict().items()}  # any float dtype
    from_state = KernelWeights.from_state_dict(state)
    assert from_model.config == from_state.config == SIZES["S"]
    assert from_model.mats.dtype == np.float32 and from_model.mats.flags.c_contiguous
    assert np.array_equal(from_model.mats, from_state.mats)
    assert np.array_equal(from_model.vecs, from_state.vecs)
    odd = LineRWKV(LineRWKVConfig(width=6, n_enc=1, n_lines=1, n_bands=1, n_dec=1))
    with pytest.raises(ValueError, match="multiple of 4"):
        KernelWeights.from_model(odd)


# ---------------------------------------------------------------------------------------------
# Agreement with torch and bit-exactness between the encoder and decoder paths


@pytest.mark.parametrize("size", ["XS", "S", "M", "L"])
def test_close_to_torch_and_stepper_bitwise(size: str) -> None:
    model = perturbed_model(size, 1)
    weights = KernelWeights.from_model(model)
    x = _random_cube((12, 10, 24), 2)
    pred = predict_cube(weights, x)
    assert pred.shape == (12, 9, 24) and pred.dtype == np.float32
    assert np.max(np.abs(pred - _torch_predict(model, x))) < 2e-4
    assert np.array_equal(pred, predict_stepwise(weights, x))
    assert np.array_equal(pred, predict_stepwise(weights, x, threaded=False))


def _enmap_crop(n_bands: int = 12, lines: int = 16, columns: int = 32) -> np.ndarray:
    if not ENMAP_TILE.exists():
        pytest.skip(f"{ENMAP_TILE} not available")
    rasterio = pytest.importorskip("rasterio")
    from rasterio.windows import Window

    bands = [b + 1 for b in ENMAP_202[:n_bands]]
    with rasterio.open(ENMAP_TILE) as src:
        cube = src.read(bands, window=Window(0, 0, columns, lines)).astype(np.float64)
    mean = cube.mean(axis=(1, 2), keepdims=True)
    std = cube.std(axis=(1, 2), keepdims=True)
    return ((cube - mean) / std).astype(np.float32)


@pytest.mark.parametrize("size", ["XS", "S"])
def test_enmap_crop_bitwise_and_close_to_torch(size: str) -> None:
    x = _enmap_crop()
    model = perturbed_model(size, 3)
    weights = KernelWeights.from_model(model)
    pred = predict_cube(weights, x)
    assert np.array_equal(pred, predict_stepwise(weights, x))
    assert np.max(np.abs(pred - _torch_predict(model, x))) < 2e-4


def test_step_by_step_order_and_checks() -> None:
    weights = KernelWeights.from_model(perturbed_model("XS", 4))
    x = _random_cube((3, 4, 20), 5)
    expected = predict_cube(weights, x)
    stepper = KernelStepper(weights)
    with pytest.raises(RuntimeError):
        stepper.begin_line()
    stepper.start(x[:, 0])
    for t in range(1, 4):
        stepper.begin_line()
        with pytest.raises(RuntimeError):
            stepper.predict_band(1)  # band 0 not pushed yet
        for i in range(3):
            pred = stepper.predict_band(i)
            assert np.array_equal(pred, expected[i, t - 1])
            with pytest.raises(ValueError):
                stepper.predict_band(i, np.empty(20, np.float64))
            with pytest.raises(ValueError):
                stepper.push_band(i, x[i, t, :-1])
            stepper.push_band(i, x[i, t].astype(np.float64))  # cast to float32
    with pytest.raises(RuntimeError):
        stepper.predict_band(0)  # the line is complete: begin_line() first


def test_results_do_not_depend_on_batching() -> None:
    config = SIZES["S"]  # two encoder layers: a receptive field of 2 columns on each side
    weights = KernelWeights.from_model(perturbed_model("S", 6))
    x = _random_cube((7, 9, 40), 7)
    full = predict_cube(weights, x)
    # Threads and line chunks (down to one line per chunk) change nothing.
    assert np.array_equal(full, predict_cube(weights, x, threads=1))
    assert np.array_equal(full, predict_cube(weights, x, threads=3, chunk_bytes=1))
    assert np.array_equal(full, predict_cube(weights, x, threads=1, chunk_bytes=1))
    # Earlier bands and lines do not depend on later ones.
    assert np.array_equal(full[:4], predict_cube(weights, x[:4]))
    assert np.array_equal(full[:, :5], predict_cube(weights, x[:, :6]))
    assert np.array_equal(full[:1], predict_cube(weights, x[:1]))
    # Column subsets (other tile widths) agree away from the cut edges.
    m = config.n_enc
    for c0, c1 in ((0, 17), (5, 40), (9, 30)):
        part = predict_cube(weights, x[:, :, c0:c1])
        lo = 0 if c0 == 0 else m
        hi = (c1 - c0) - (0 if c1 == 40 else m)
        assert np.array_equal(part[..., lo:hi], full[..., c0 + lo : c0 + hi]), (c0, c1)


def test_wide_lines_bitwise() -> None:
    """Lines of several column tiles (and a partial last one): tiles, threads, line chunks and
    the stepper agree, and so do column subsets away from the cut edges."""
    config = SIZES["M"]  # four encoder layers: 4 columns of context on each side
    weights = KernelWeights.from_model(perturbed_model("M", 8))
    x = _random_cube((4, 5, 150), 9)
    full = predict_cube(weights, x)
    assert np.array_equal(full, predict_cube(weights, x, threads=1, chunk_bytes=1))
    assert np.array_equal(full, predict_stepwise(weights, x))
    assert np.array_equal(full, predict_stepwise(weights, x, threaded=False))
    m = config.n_enc
    for c0, c1 in ((0, 70), (60, 150), (33, 101), (1, 149)):
        part = predict_cube(weights, x[:, :, c0:c1], threads=1)
        lo = 0 if c0 == 0 else m
        hi = (c1 - c0) - (0 if c1 == 150 else m)
        assert np.array_equal(part[..., lo:hi], full[..., c0 + lo : c0 + hi]), (c0, c1)


# Prediction bytes (little-endian float32) of a fixed model and cube built by integer hashing,
# for arithmetic version 2. A change means that this platform, compiler or code computes
# different bits: cubes encoded elsewhere would then decode wrongly here. (A deliberate change
# of the arithmetic raises ARITHMETIC_VERSION and replaces these.) The same digests must come
# out whatever instruction set numba compiles for, e.g. with a fresh NUMBA_CACHE_DIR and
# NUMBA_CPU_NAME=x86-64 NUMBA_CPU_FEATURES=+sse2 (no FMA instruction: library fmaf, 8-lane
# vectors), NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx2 (AVX2 + FMA, 8 lanes) or
# NUMBA_CPU_NAME=skylake-avx512 NUMBA_CPU_FEATURES=+avx512f (AVX-512, 32 lanes).
GOLDEN_VERSION = 2
GOLDEN = {
    "XS": "59b4f491c7a2c2e4f5bf73cbe7e63e16e181a8bb2b8939b1c007cf972cec2b8b",
    "S": "40fd0211a24103686372bf05c6b1664bbd81136243a97d7c347116d3612becc0",
    "M": "edfc9d390ff1e8879a8644140d5a7d1c677ae8611ece708772ce68a9325ce2d0",
    "L": "6173b38c90ad94ac5330001d6c2eea1f9d8d73b29a5818e473f0cdeffa8edcec",
}


@pytest.mark.parametrize("size", ["XS", "S", "M", "L"])
def test_golden_prediction_hash(size: str) -> None:
    assert ARITHMETIC_VERSION == GOLDEN_VERSION
    weights = KernelWeights.from_state_dict(_hashed_state(SIZES[size], 11))
    x = _hashed_cube((6, 8, 21), 12)
    pred = predict_cube(weights, x)
    assert np.array_equal(pred, predict_stepwise(weights, x))
    digest = hashlib.sha256(pred.astype("<f4").tobytes()).hexdigest()
    assert digest == GOLDEN[size]
