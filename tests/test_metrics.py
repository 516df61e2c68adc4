"""Distortion and rate measures against hand-computed values."""

import math

import numpy as np
import pytest

from hsicomp.evaluation.metrics import bits_per_sample, compare, format_value, parse_bool


def test_known_error_pattern():
    original = np.full((2, 2, 2), 1000, dtype=np.uint16)
    decoded = original.copy()
    decoded[0, 0, 0] += 3  # errors: 3, -1, 0 x 6  -> sse 10, sae 4 over 8 samples
    decoded[1, 1, 1] -= 1
    m = compare(original, decoded, peak=4095)
    assert m["mse"] == pytest.approx(10 / 8)
    assert m["mae"] == pytest.approx(4 / 8)
    assert m["max_abs_error"] == 3
    assert isinstance(m["max_abs_error"], int)
    assert m["psnr"] == pytest.approx(10 * math.log10(4095**2 / (10 / 8)))


def test_identical_cubes_are_lossless():
    cube = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    m = compare(cube, cube.copy(), peak=65535)
    assert m["mse"] == 0 and m["mae"] == 0 and m["max_abs_error"] == 0
    assert m["psnr"] == math.inf
    assert m["sam_deg"] == 0.0


def test_no_overflow_at_full_scale():
    original = np.zeros((4, 8, 8), dtype=np.uint16)
    decoded = np.full((4, 8, 8), 65535, dtype=np.uint16)
    m = compare(original, decoded, peak=65535)
    assert m["mse"] == 65535.0**2
    assert m["max_abs_error"] == 65535
    assert m["psnr"] == pytest.approx(0.0)
    # The reverse direction must not wrap around in unsigned arithmetic either.
    assert compare(decoded, original, peak=65535)["mae"] == 65535.0


def test_spectral_angle_identical_scaled_and_orthogonal():
    original = np.zeros((2, 1, 3), dtype=np.uint16)
    decoded = np.zeros((2, 1, 3), dtype=np.uint16)
    original[:, 0, 0] = [1, 0]
    decoded[:, 0, 0] = [0, 1]  # orthogonal: 90 degrees
    original[:, 0, 1] = [3, 4]
    decoded[:, 0, 1] = [6, 8]  # same direction: 0 degrees
    original[:, 0, 2] = [5, 5]
    decoded[:, 0, 2] = [0, 7]  # 45 degrees
    assert compare(original, decoded, 1)["sam_deg"] == pytest.approx((90 + 0 + 45) / 3)
    single = compare(original[:, :, :1], decoded[:, :, :1], 1)["sam_deg"]
    assert single == pytest.approx(90.0)


def test_spectral_angle_ignores_zero_spectra():
    original = np.zeros((3, 2, 2), dtype=np.uint16)
    decoded = np.zeros((3, 2, 2), dtype=np.uint16)
    original[:, 0, 0] = [1, 1, 0]
    decoded[:, 0, 0] = [1, 0, 0]  # 45 degrees; the other pixels are zero in one or both cubes
    decoded[:, 1, 1] = [2, 0, 0]
    m = compare(original, decoded, 1)
    assert m["sam_deg"] == pytest.approx(45.0)
    assert compare(original * 0, decoded * 0, 1)["sam_deg"] == 0.0


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        compare(np.zeros((2, 2, 2), np.uint16), np.zeros((2, 2, 3), np.uint16), 1)


def test_bits_per_sample():
    assert bits_per_sample(100, (2, 5, 10)) == 8.0
    assert bits_per_sample(1, (1, 2, 4)) == 1.0


def test_format_and_parse():
    assert format_value(1 / 3) == "0.333333"
    assert format_value(math.inf) == "inf"
    assert format_value(True) == "true" and format_value(7) == "7"
    assert parse_bool("true") and not parse_bool("False")
    with pytest.raises(ValueError):
        parse_bool("maybe")
