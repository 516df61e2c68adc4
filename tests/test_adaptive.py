"""Tests for the context-adaptive range coder of signed residuals (``arith``)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import ENMAP_DIR

from hsicomp.data.synthetic import generate_cube
from hsicomp.entropy import golomb
from hsicomp.entropy.adaptive import (
    ResidualDecoder,
    ResidualEncoder,
    decode_cube,
    encode_cube,
)
from hsicomp.entropy.adaptive.constants import _VERSION
from hsicomp.io.bands import ENMAP_202

ENMAP_TILE = ENMAP_DIR / "enmap_potsdam_tile_128_128.tif"
DELTAS = [0, 1, 2, 5, 10, 20, 40]
#: Output of encode_cube for _hash_cube((7, 9, 23), 4095), see test_golden_stream.
GOLDEN_LENGTH = 1549
GOLDEN_SHA256 = "63bd297c7c19be6573c09e8b6223795afcaf61967a4c28d2b87f150715692866"


def _cube(
    shape: tuple[int, int, int], bits: int, stats: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """(residuals, predictions, max_value) with valid ranges for a given statistic."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    pred = rng.integers(0, top + 1, size=shape)
    if stats == "zeros":
        x = pred.copy()
    elif stats == "limits":
        # samples at 0 and max_value, predictions anywhere (also at the limits)
        x = rng.choice([0, top], size=shape)
        pred[rng.random(shape) < 0.3] = 0
        pred[rng.random(shape) < 0.3] = top
    else:
        scale = float(stats.removeprefix("laplace"))
        x = np.clip(pred + np.rint(rng.laplace(0.0, scale, size=shape)), 0, top)
    return (x - pred).astype(np.int64), pred.astype(np.int64), top


def _hash_cube(shape: tuple[int, int, int], top: int) -> tuple[np.ndarray, np.ndarray]:
    """Residuals and predictions from an integer hash: the same on every platform."""
    idx = np.arange(np.prod(shape), dtype=np.uint64)
    h = (idx + np.uint64(12345)) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    pred = ((h >> np.uint64(8)) % np.uint64(top + 1)).astype(np.int64)
    # heavy-tailed magnitudes that grow with the band index
    band = (idx // np.uint64(shape[1] * shape[2])).astype(np.int64)
    mag = ((h >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
    mag >>= ((h >> np.uint64(48)) & np.uint64(15)).astype(np.int64) + 9 - band
    mag = np.maximum(mag, 0)
    sign = np.where(((h >> np.uint64(52)) & np.uint64(1)) == 1, -1, 1)
    x = np.clip(pred + sign * mag, 0, top)
    return (x - pred).reshape(shape), pred.reshape(shape)


def _golomb_bits(res: np.ndarray) -> int:
    mapped = np.where(res >= 0, 2 * res, -2 * res - 1).astype(np.uint16)
    return golomb.bit_count(mapped)


def _prev_band(x: np.ndarray, delta: int, top: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Near-lossless quantised cube and its previous-band residuals and predictions.

    Band 0 is predicted from the previous column (the previous row in column 0).
    """
    q = 2 * delta + 1
    xq = (x.astype(np.int64) + delta) // q  # round(x / q) for odd q
    pred = np.zeros_like(xq)
    pred[1:] = xq[:-1]
    pred[0, :, 1:] = xq[0, :, :-1]
    pred[0, 1:, 0] = xq[0, :-1, 0]
    return xq - pred, pred, (top + delta) // q


def _entropy_bits(res: np.ndarray) -> float:
    _, counts = np.unique(res, return_counts=True)
    return float(-(counts * np.log2(counts / res.size)).sum())


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("bits", [8, 12, 14, 16])
@pytest.mark.parametrize(
    "stats", ["zeros", "laplace0.3", "laplace3", "laplace30", "laplace3000", "limits"]
)
def test_round_trip(bits: int, stats: str) -> None:
    res, pred, top = _cube((5, 6, 17), bits, stats, seed=bits)
    data = encode_cube(res, pred, top)
    out = decode_cube(data, pred, top)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, res)


@pytest.mark.parametrize("shape", [(1, 4, 9), (4, 1, 9), (3, 5, 1), (1, 1, 1), (2, 3, 2)])
@pytest.mark.parametrize("stats", ["laplace3", "limits", "zeros"])
def test_round_trip_odd_shapes(shape: tuple[int, int, int], stats: str) -> None:
    res, pred, top = _cube(shape, 14, stats, seed=1)
    np.testing.assert_array_equal(decode_cube(encode_cube(res, pred, top), pred, top), res)


def test_round_trip_small_max_value() -> None:
    res, pred, top = _cube((3, 4, 5), 1, "laplace3")
    assert top == 1
    np.testing.assert_array_equal(decode_cube(encode_cube(res, pred, top), pred, top), res)


def test_extreme_residuals() -> None:
    top = 65535
    pred = np.array([[[0, top, 0, top, 1, top - 1, 32768, 12345]]] * 2)
    x = np.array([[[top, 0, 0, top, 0, top, 65535, 12345]], [[0, 0, top, 1, 2, 3, 4, 5]]])
    res = x - pred
    np.testing.assert_array_equal(decode_cube(encode_cube(res, pred, top), pred, top), res)


def test_streaming_closed_loop() -> None:
    """Predictions computed from decoded samples, as a codec does."""
    x = generate_cube(3, bands=6, rows=7, cols=11).astype(np.int64)
    top = (1 << 14) - 1

    def predict(done: np.ndarray, i: int, t: int) -> np.ndarray:
        if i > 0:
            return done[i - 1, t]
        if t > 0:
            return done[i, t - 1]
        return np.full(x.shape[2], 1 << 13, dtype=np.int64)

    pred = np.zeros_like(x)
    for t in range(x.shape[1]):
        for i in range(x.shape[0]):
            pred[i, t] = predict(x, i, t)
    enc = ResidualEncoder(x.shape, top)
    for t in range(x.shape[1]):
        for i in range(x.shape[0]):
            enc.encode_line(x[i, t] - pred[i, t], pred[i, t])
    data = enc.finish()
    assert data == encode_cube(x - pred, pred, top)
    assert enc.num_bits() == 8 * (len(data) - 5)

    dec = ResidualDecoder(data, x.shape, top)
    out = np.zeros_like(x)
    for t in range(x.shape[1]):
        for i in range(x.shape[0]):
            p = predict(out, i, t)
            out[i, t] = p + dec.decode_line(p.astype(np.uint16))
    np.testing.assert_array_equal(out, x)


def test_accepts_other_integer_dtypes() -> None:
    res, pred, top = _cube((3, 4, 6), 12, "laplace3")
    data = encode_cube(res.astype(np.int16), pred.astype(np.uint16), top)
    assert data == encode_cube(res, pred, top)
    np.testing.assert_array_equal(decode_cube(data, pred.astype(np.int32), top), res)


# ---------------------------------------------------------------- determinism


def test_repeatable() -> None:
    res, pred, top = _cube((4, 5, 13), 12, "laplace30", seed=5)
    assert encode_cube(res, pred, top) == encode_cube(res, pred, top)


def test_golden_stream() -> None:
    """Pins the exact output bytes: any platform or version dependence shows up here."""
    res, pred = _hash_cube((7, 9, 23), 4095)
    data = encode_cube(res, pred, 4095)
    np.testing.assert_array_equal(decode_cube(data, pred, 4095), res)
    assert len(data) == GOLDEN_LENGTH
    assert hashlib.sha256(data).hexdigest() == GOLDEN_SHA256


def test_threads_give_the_same_streams() -> None:
    """The kernels release the GIL; coders in threads do not disturb each other."""
    cubes = [_cube((6, 8, 40), 14, "laplace30", seed=s) for s in range(4)]
    serial = [encode_cube(*c) for c in cubes]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda c: encode_cube(*c), cubes)) == serial
        decoded = list(pool.map(lambda a: decode_cube(a[0], a[1][1], a[1][2]),
                                zip(serial, cubes, strict=True)))
    for out, (res, _, _) in zip(decoded, cubes, strict=True):
        np.testing.assert_array_equal(out, res)


# ---------------------------------------------------------------- bad input


def test_truncated_stream_raises() -> None:
    res, pred, top = _cube((3, 4, 10), 12, "laplace30")
    data = encode_cube(res, pred, top)
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_cube(data[:cut], pred, top)
    with pytest.raises(ValueError, match="trailing|padded"):
        decode_cube(data + b"\0\0\0\0", pred, top)
    with pytest.raises(ValueError, match="version"):
        decode_cube(b"\x07" + data[1:], pred, top)
    # streams of the previous model (version 1) are refused, not misdecoded
    assert data[0] == 2
    with pytest.raises(ValueError, match="unsupported stream version 1"):
        decode_cube(b"\x01" + data[1:], pred, top)


def test_garbage_stream_never_crashes() -> None:
    res, pred, top = _cube((3, 4, 10), 12, "laplace30")
    rng = np.random.default_rng(7)
    failures = 0
    for n in range(1, 40):
        words = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype("<u4").tobytes()
        data = bytes([_VERSION]) + n.to_bytes(4, "little") + words
        try:
            out = decode_cube(data, pred, top)
        except ValueError:
            failures += 1
            continue
        assert np.all(out >= -pred) and np.all(out <= top - pred)
    assert failures > 0


def test_encode_errors() -> None:
    res, pred, top = _cube((2, 3, 4), 8, "laplace3")
    with pytest.raises(ValueError, match="outside"):
        encode_cube(res + top + 1, pred, top)
    with pytest.raises(ValueError, match="outside"):
        encode_cube(res, pred + top + 1, top)
    with pytest.raises(ValueError, match="integer dtype"):
        encode_cube(res.astype(float), pred, top)
    with pytest.raises(ValueError, match="shape mismatch"):
        encode_cube(res[:1], pred, top)
    for bad in (0, 65536, True, 3.0):
        with pytest.raises(ValueError, match="max_value"):
            encode_cube(res, pred, bad)
    enc = ResidualEncoder((1, 1, 4), top)
    with pytest.raises(ValueError, match="shape"):
        enc.encode_line(res[0, 0, :3], pred[0, 0, :3])
    with pytest.raises(ValueError, match="outside"):
        enc.encode_line(np.array([-1, 0, 0, 0]), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="0 of 1"):
        enc.finish()
    enc.encode_line(res[0, 0], pred[0, 0])
    with pytest.raises(ValueError, match="already coded"):
        enc.encode_line(res[0, 0], pred[0, 0])
    with pytest.raises(ValueError, match="shape"):
        ResidualEncoder((2, 3), top)


def test_decode_errors() -> None:
    res, pred, top = _cube((2, 2, 4), 8, "laplace3")
    data = encode_cube(res, pred, top)
    dec = ResidualDecoder(data, res.shape, top)
    with pytest.raises(ValueError, match="outside"):
        dec.decode_line(np.full(4, top + 1))
    dec = ResidualDecoder(data, res.shape, top)
    for t in range(2):
        for i in range(2):
            np.testing.assert_array_equal(dec.decode_line(pred[i, t]), res[i, t])
    with pytest.raises(ValueError, match="already coded"):
        dec.decode_line(pred[0, 0])


def test_bad_prediction_leaves_decoder_usable() -> None:
    res, pred, top = _cube((2, 2, 4), 8, "laplace3")
    dec = ResidualDecoder(encode_cube(res, pred, top), res.shape, top)
    with pytest.raises(ValueError, match="outside"):
        dec.decode_line(np.full(4, -1))
    for t in range(2):
        for i in range(2):
            np.testing.assert_array_equal(dec.decode_line(pred[i, t]), res[i, t])


# ---------------------------------------------------------------- compression


def test_all_zero_cube_is_tiny() -> None:
    res = np.zeros((20, 32, 32), dtype=np.int64)
    pred = np.full(res.shape, 100)
    data = encode_cube(res, pred, 4095)
    assert 8 * len(data) / res.size < 0.01


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_iid_laplace_close_to_entropy(scale: float) -> None:
    res, pred, top = _cube((32, 64, 64), 14, f"laplace{scale}", seed=3)
    bits = 8 * len(encode_cube(res, pred, top))
    assert bits < _golomb_bits(res)
    assert bits < 1.02 * _entropy_bits(res) + 0.01 * res.size


@pytest.mark.parametrize("delta", [0, 40])
def test_synthetic_beats_golomb(delta: int) -> None:
    x = generate_cube(1, bands=48, rows=32, cols=32)
    res, pred, top = _prev_band(x, delta, (1 << 14) - 1)
    data = encode_cube(res, pred, top)
    np.testing.assert_array_equal(decode_cube(data, pred, top), res)
    assert 8 * len(data) < 0.9 * _golomb_bits(res)


@pytest.fixture(scope="module")
def enmap_cube() -> np.ndarray:
    if not ENMAP_TILE.is_file():
        pytest.skip(f"no EnMAP tile at {ENMAP_TILE}")
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(ENMAP_TILE) as src:
        data = src.read(indexes=[b + 1 for b in ENMAP_202])
    assert data.min() >= 0 and data.max() < 1 << 14
    return data.astype(np.int64)


@pytest.mark.parametrize("delta", DELTAS)
def test_enmap_beats_golomb(enmap_cube: np.ndarray, delta: int) -> None:
    res, pred, top = _prev_band(enmap_cube, delta, (1 << 14) - 1)
    data = encode_cube(res, pred, top)
    if delta in (0, 40):
        np.testing.assert_array_equal(decode_cube(data, pred, top), res)
    arith = 8 * len(data)
    ref = _golomb_bits(res)
    assert arith < 0.9 * ref
    assert arith < _entropy_bits(res)
    if delta == 40:
        assert arith < 0.7 * ref


@pytest.mark.parametrize("stats", ["laplace0.3", "laplace3.0", "laplace300.0"])
def test_stream_length_matches_ideal_code_length(stats: str) -> None:
    """The range coder spends what the model's own probabilities say, within 0.5 %."""
    res, pred, top = _cube((16, 24, 40), 14, stats, seed=4)
    enc = ResidualEncoder(res.shape, top, track_ideal=True)
    for t in range(res.shape[1]):
        for i in range(res.shape[0]):
            enc.encode_line(res[i, t], pred[i, t])
    data = enc.finish()
    payload_bits = 8 * (len(data) - 5)
    assert enc.ideal_bits > 0.05 * res.size
    assert enc.ideal_bits - 32 <= payload_bits <= 1.005 * enc.ideal_bits + 64
    assert data == encode_cube(res, pred, top)  # tracking does not change the stream
