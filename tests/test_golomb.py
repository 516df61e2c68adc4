"""Tests for the CCSDS-123.0-B-2 sample-adaptive Golomb-power-of-2 coder."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from helpers import SHARED

from hsicomp.entropy import SampleAdaptiveParams, bit_count, code_lengths, decode, encode

VECTORS = (
    SHARED / "testvectors" / "ccsds123-sample-adaptive"
)


def _cases() -> list[dict]:
    index = VECTORS / "cases.json"
    if not index.is_file():
        return []
    return json.loads(index.read_text())["cases"]


def _reference_encode(cube: np.ndarray, p: SampleAdaptiveParams, order: str) -> bytes:
    """Plain-Python coder written straight from the standard's description."""
    axes = {"bil": "rzx", "bsq": "zrx", "bip": "rxz"}[order]
    nb, nr, nc = cube.shape
    sizes = {"z": nb, "r": nr, "x": nc}
    d = p.dynamic_range
    gamma = [2**p.gamma0] * nb
    sigma = [(3 * 2 ** (p.k_init + 6) - 49) * 2**p.gamma0 // 2**7] * nb
    bits: list[str] = []
    for a in range(sizes[axes[0]]):
        for b in range(sizes[axes[1]]):
            for c in range(sizes[axes[2]]):
                idx = dict(zip(axes, (a, b, c), strict=True))
                z, y, x = idx["z"], idx["r"], idx["x"]
                delta = int(cube[z, y, x])
                if y == 0 and x == 0:
                    bits.append(format(delta, f"0{d}b"))
                    continue
                g, s = gamma[z], sigma[z]
                limit = s + 49 * g // 2**7
                k = 0
                while k < d - 2 and g * 2 ** (k + 1) <= limit:
                    k += 1
                u = delta // 2**k
                if u < p.u_max:
                    bits.append("0" * u + "1" + (format(delta % 2**k, f"0{k}b") if k else ""))
                else:
                    bits.append("0" * p.u_max + format(delta, f"0{d}b"))
                if g < 2**p.gamma_star - 1:
                    sigma[z], gamma[z] = s + delta, g + 1
                else:
                    sigma[z], gamma[z] = (s + delta + 1) // 2, (g + 1) // 2
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def _residuals(shape: tuple[int, int, int], mean: float, seed: int, d: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cube = rng.geometric(1.0 / (mean + 1.0), size=shape) - 1
    return np.minimum(cube, 2**d - 1).astype(np.uint16)


PARAM_SETS = [
    SampleAdaptiveParams(),
    SampleAdaptiveParams(dynamic_range=12, u_max=8, gamma0=3, k_init=0, gamma_star=4),
    SampleAdaptiveParams(dynamic_range=16, u_max=32, gamma0=8, k_init=14, gamma_star=11),
    SampleAdaptiveParams(dynamic_range=2, u_max=9, gamma0=1, k_init=0, gamma_star=5),
]


# ---------------------------------------------------------------- reference vectors


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["name"])
def test_reference_vectors(case: dict) -> None:
    raw = (VECTORS / f"{case['name']}.bsq").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == case["bsq_sha256"]
    expected = (VECTORS / f"{case['name']}.cmp").read_bytes()
    assert len(expected) == case["cmp_bytes"]
    shape = (case["bands"], case["rows"], case["cols"])
    cube = np.frombuffer(raw, dtype="<u2").reshape(shape)
    params = SampleAdaptiveParams()
    assert encode(cube, params, order="bil") == expected
    assert np.array_equal(decode(expected, shape, params, order="bil"), cube)
    assert (bit_count(cube) + 7) // 8 == len(expected)


def test_vectors_present_or_skipped() -> None:
    if not _cases():
        pytest.skip(f"test vectors not found at {VECTORS}")
    assert len(_cases()) >= 4


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("order", ["bil", "bsq", "bip"])
@pytest.mark.parametrize("params", PARAM_SETS, ids=lambda p: f"D{p.dynamic_range}U{p.u_max}")
def test_round_trip_matches_reference(order: str, params: SampleAdaptiveParams) -> None:
    d = params.dynamic_range
    cube = _residuals((4, 6, 7), mean=3.0, seed=1, d=d).astype(np.int64)
    rng = np.random.default_rng(2)
    escapes = rng.random(cube.shape) < 0.1
    cube[escapes] = rng.integers(0, 2**d, size=int(escapes.sum()))
    data = encode(cube, params, order=order)
    assert data == _reference_encode(cube, params, order)
    out = decode(data, cube.shape, params, order=order)
    assert out.dtype == np.uint16
    assert np.array_equal(out, cube)


def test_orders_differ() -> None:
    cube = _residuals((3, 5, 6), mean=4.0, seed=3)
    streams = {o: encode(cube, order=o) for o in ("bil", "bsq", "bip")}
    assert len(set(streams.values())) == 3
    assert encode(cube, order="BIL") == streams["bil"]


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 40), (40, 1, 1), (1, 40, 1), (2, 3, 1)])
@pytest.mark.parametrize("order", ["bil", "bsq", "bip"])
def test_degenerate_shapes(shape: tuple[int, int, int], order: str) -> None:
    cube = _residuals(shape, mean=6.0, seed=4)
    data = encode(cube, order=order)
    assert data == _reference_encode(cube, SampleAdaptiveParams(), order)
    assert np.array_equal(decode(data, shape, order=order), cube)


def test_single_sample_per_band_is_raw() -> None:
    cube = np.array([[[0x1234]], [[0xFFFF]]], dtype=np.uint16)
    assert encode(cube) == b"\x12\x34\xff\xff"


def test_all_zeros() -> None:
    cube = np.zeros((5, 9, 11), dtype=np.uint16)
    data = encode(cube)
    assert np.array_equal(decode(data, cube.shape), cube)
    # raw first samples, then codewords that shrink to a single bit
    assert bit_count(cube) < 5 * 16 + 2 * cube.size


def test_escape_codeword_length() -> None:
    params = SampleAdaptiveParams()
    cube = np.zeros((1, 1, 3), dtype=np.uint16)
    cube[0, 0, 1] = 65535
    lengths = code_lengths(cube, params)
    # k starts at 3, so 65535 >> 3 >= U_max: escape of U_max + D bits
    assert lengths[0, 0, 0] == 16
    assert lengths[0, 0, 1] == params.u_max + 16
    assert np.array_equal(decode(encode(cube), cube.shape), cube)


def test_accepts_wide_integer_dtypes() -> None:
    cube = _residuals((2, 4, 4), mean=5.0, seed=5)
    expected = encode(cube)
    for dtype in (np.int32, np.int64, np.uint32, np.uint64):
        assert encode(cube.astype(dtype)) == expected


# ---------------------------------------------------------------- bit counting


@pytest.mark.parametrize("order", ["bil", "bsq", "bip"])
def test_bit_count_and_code_lengths(order: str) -> None:
    cube = _residuals((6, 10, 9), mean=20.0, seed=6)
    cube[0, 3, 4] = 60000
    data = encode(cube, order=order)
    bits = bit_count(cube, order=order)
    lengths = code_lengths(cube, order=order)
    assert lengths.shape == cube.shape
    assert int(lengths.sum()) == bits
    padding = 8 * len(data) - bits
    assert 0 <= padding < 8
    # the padding bits are zero
    assert data[-1] & ((1 << padding) - 1) == 0
    assert np.all(lengths[:, 0, 0] == 16)


# ---------------------------------------------------------------- corrupt input


def test_truncated_input_raises() -> None:
    cube = _residuals((3, 4, 5), mean=4.0, seed=7)
    data = encode(cube)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode(data[:cut], cube.shape)


def test_trailing_bytes_raise() -> None:
    cube = _residuals((3, 4, 5), mean=4.0, seed=8)
    data = encode(cube)
    with pytest.raises(ValueError, match="trailing"):
        decode(data + b"\x00", cube.shape)


def test_padding_bits_ignored() -> None:
    cube = _residuals((2, 3, 5), mean=4.0, seed=9)
    data = encode(cube)
    padding = 8 * len(data) - bit_count(cube)
    if padding == 0:
        pytest.skip("no padding bits for this cube")
    flipped = data[:-1] + bytes([data[-1] | ((1 << padding) - 1)])
    assert np.array_equal(decode(flipped, cube.shape), cube)


def test_garbage_input() -> None:
    shape = (4, 8, 8)
    with pytest.raises(ValueError):
        decode(b"\x00" * 64, shape)  # endless zeros: escapes run past the end
    with pytest.raises(ValueError):
        decode(b"\xff" * 400, shape)  # short codewords: data left over
    rng = np.random.default_rng(10)
    for _ in range(20):
        junk = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
        try:
            out = decode(junk, shape)
        except ValueError:
            continue
        assert out.shape == shape


def test_huge_shape_rejected_before_allocation() -> None:
    with pytest.raises(ValueError, match="too short"):
        decode(b"\x00" * 16, (10_000, 100_000, 100_000))


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dynamic_range": 1},
        {"dynamic_range": 17},
        {"u_max": 7},
        {"u_max": 33},
        {"gamma0": 0},
        {"gamma0": 9},
        {"gamma_star": 3},
        {"gamma_star": 12},
        {"gamma0": 6, "gamma_star": 6},
        {"k_init": -1},
        {"k_init": 15},
        {"dynamic_range": 8, "k_init": 7},
        {"u_max": 18.0},
        {"gamma0": True},
    ],
)
def test_invalid_params(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        SampleAdaptiveParams(**kwargs)


def test_valid_param_edges() -> None:
    SampleAdaptiveParams(dynamic_range=8, k_init=6)
    SampleAdaptiveParams(gamma0=3, gamma_star=4)
    SampleAdaptiveParams(gamma0=5, gamma_star=6)


def test_invalid_values_and_arguments() -> None:
    cube = np.zeros((2, 3, 4), dtype=np.int32)
    bad = cube.copy()
    bad[1, 2, 3] = -1
    with pytest.raises(ValueError, match="non-negative"):
        encode(bad)
    big = cube.copy()
    big[0, 1, 1] = 2**16
    with pytest.raises(ValueError, match="dynamic_range"):
        encode(big)
    small_d = SampleAdaptiveParams(dynamic_range=4, k_init=2)
    big[0, 1, 1] = 16
    with pytest.raises(ValueError, match="dynamic_range"):
        bit_count(big, small_d)
    with pytest.raises(ValueError, match="integer"):
        encode(cube.astype(np.float32))
    with pytest.raises(ValueError):
        encode(cube[0])
    with pytest.raises(ValueError):
        encode(np.zeros((0, 3, 4), dtype=np.uint16))
    with pytest.raises(ValueError, match="order"):
        encode(cube, order="bsx")
    with pytest.raises(ValueError, match="order"):
        decode(b"", (2, 3, 4), order="xyz")
    with pytest.raises(ValueError):
        decode(b"\x00" * 8, (2, 3))
