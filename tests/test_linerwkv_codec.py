"""The linerwkv codec: exact round trips, error bound, determinism, model identity, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ENMAP_DIR, perturbed_model, smooth_cube, tool_env

from hsicomp.cli.codec import parse_coder
from hsicomp.codecs import get_codec
from hsicomp.codecs.linerwkv import (
    _FIXED_SIDE,
    CODERS,
    _fold,
    _round_predictions,
    _unfold,
)
from hsicomp.errors import HsicompError
from hsicomp.io.bands import ENMAP_202
from hsicomp.io.container import pack, unpack
from hsicomp.models.checkpoint import save_model

ENMAP_TILE = ENMAP_DIR / "enmap_potsdam_tile_128_128.tif"
PAPER_DELTAS = [0, 1, 2, 3, 4, 5, 10, 20, 40]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "xs.pt"
    save_model(path, perturbed_model("XS", 1), "XS")
    return path


@pytest.fixture(scope="module")
def other_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "other.pt"
    save_model(path, perturbed_model("XS", 2), "XS")
    return path


def _codec(model: Path, coder: str = "arith", **extra: object):
    return get_codec("linerwkv", {"model": str(model), "coder": coder, **extra})


def _expected(cube: np.ndarray, delta: int, bit_depth: int) -> np.ndarray:
    q = 2 * delta + 1
    return np.minimum((cube.astype(np.int64) + delta) // q * q, (1 << bit_depth) - 1)


def _roundtrip(codec, cube: np.ndarray, delta: int, bit_depth: int) -> tuple[bytes, np.ndarray]:
    data = codec.encode(cube, delta, bit_depth)
    out = codec.decode(data)
    assert out.dtype == np.uint16 and out.shape == cube.shape
    assert np.array_equal(out, _expected(cube, delta, bit_depth))
    assert int(np.abs(out.astype(np.int64) - cube).max()) <= delta
    return data, out


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("delta", [0, 1, 3, 40])
def test_roundtrip_within_delta(model_path: Path, coder: str, delta: int) -> None:
    cube = smooth_cube((6, 9, 11), 12, seed=delta)
    data, _ = _roundtrip(_codec(model_path, coder), cube, delta, 12)
    header = unpack(data)[0]
    assert (header.codec, header.shape, header.delta, header.bit_depth) == \
        ("linerwkv", cube.shape, delta, 12)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 5), (2, 4, 1), (1, 5, 3), (5, 2, 2)])
def test_small_and_degenerate_shapes(model_path: Path, coder: str,
                                     shape: tuple[int, int, int]) -> None:
    cube = smooth_cube(shape, 10, seed=sum(shape))
    for delta in (0, 2):
        _roundtrip(_codec(model_path, coder), cube, delta, 10)


@pytest.mark.parametrize("coder", CODERS)
def test_extreme_values(model_path: Path, coder: str) -> None:
    """Full-range noise, constant cubes at 0 and at the top: predictions clamp, folding holds."""
    rng = np.random.default_rng(5)
    codec = _codec(model_path, coder)
    noise = rng.integers(0, 1 << 16, size=(4, 6, 7), dtype=np.uint16)
    for cube in (noise, np.zeros((3, 4, 5), np.uint16), np.full((3, 4, 5), 65535, np.uint16)):
        for delta in (0, 7, 1000):
            _roundtrip(codec, cube, delta, 16)


@pytest.mark.parametrize("coder", CODERS)
def test_one_level_after_quantisation_has_no_payload(model_path: Path, coder: str) -> None:
    cube = np.array([[[0, 1], [1, 0]]], dtype=np.uint16)
    data, out = _roundtrip(_codec(model_path, coder), cube, 1, 1)
    assert unpack(data)[2] == b""
    assert not out.any()


def test_fold_is_a_bijection_onto_the_range() -> None:
    for max_q in (1, 2, 7, 8):
        for p in range(max_q + 1):
            res = np.arange(-p, max_q - p + 1, dtype=np.int64)
            pred = np.full(res.size, p, dtype=np.int64)
            mapped = np.empty_like(res)
            _fold(res, pred, max_q, mapped)
            assert sorted(mapped.tolist()) == list(range(max_q + 1))
            back = np.empty_like(res)
            assert _unfold(mapped, pred, max_q, back)
            assert np.array_equal(back, res)
    pred = np.array([3], dtype=np.int64)
    assert not _unfold(np.array([9], dtype=np.int64), pred, 8, np.empty(1, np.int64))


def test_rounding_rule() -> None:
    pn = np.array([0.5, 1.5, 2.4999, -3.0, np.nan, np.inf, -np.inf, 9.7, 2.5004],
                  dtype=np.float32)
    out = np.empty(pn.size, dtype=np.int64)
    near = _round_predictions(pn, np.float32(0.0), np.float32(1.0), 9, out)
    assert out.tolist() == [1, 2, 2, 0, 0, 9, 0, 9, 3]
    assert near == 4  # 0.5, 1.5, 2.4999 and 2.5004 lie within 0.001 of a boundary


def test_deterministic_bytes_whatever_the_threads(model_path: Path) -> None:
    cube = smooth_cube((7, 12, 20), 14, seed=3)
    one = _codec(model_path, threads=1).encode(cube, 2, 14)
    two = _codec(model_path, threads=2).encode(cube, 2, 14)
    again = _codec(model_path, threads=2).encode(cube, 2, 14)
    assert one == two == again


def test_arith_beats_sample_adaptive_on_structured_data(model_path: Path) -> None:
    cube = smooth_cube((12, 16, 32), 14, seed=11)
    for delta in (0, 5, 40):
        sizes = {c: len(_codec(model_path, c).encode(cube, delta, 14)) for c in CODERS}
        assert sizes["arith"] < sizes["sample-adaptive"], (delta, sizes)


def test_old_coder_name_writes_the_same_file(model_path: Path) -> None:
    """``ccsds``, the old name of ``sample-adaptive``, still works and gives the same bytes
    (coder byte 1, as always)."""
    cube = smooth_cube((5, 6, 7), 12, seed=8)
    old = _codec(model_path, "ccsds")
    assert old.params["coder"] == "sample-adaptive"
    data = _codec(model_path, "sample-adaptive").encode(cube, 2, 12)
    assert old.encode(cube, 2, 12) == data
    assert unpack(data)[1][2] == 1
    assert parse_coder("ccsds") == "sample-adaptive" and parse_coder("arith") == "arith"


def _enmap_crop(bands: int, rows: int, cols: int) -> np.ndarray:
    if not ENMAP_TILE.exists():
        pytest.skip(f"{ENMAP_TILE} not available")
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(ENMAP_TILE) as src:
        data = src.read([b + 1 for b in ENMAP_202[:bands]], window=Window(0, 0, cols, rows))
    return np.clip(data, 0, (1 << 14) - 1).astype(np.uint16)


def test_real_enmap_crop_every_delta(model_path: Path) -> None:
    """All 202 bands of a real EnMAP crop: exact at every delta, arith below sample-adaptive
    throughout."""
    cube = _enmap_crop(202, 8, 24)
    for delta in PAPER_DELTAS:
        sizes = {}
        for coder in CODERS:
            data, _ = _roundtrip(_codec(model_path, coder), cube, delta, 14)
            sizes[coder] = len(data)
        assert sizes["arith"] < sizes["sample-adaptive"], (delta, sizes)


def test_model_identity_is_checked(model_path: Path, other_model_path: Path) -> None:
    cube = smooth_cube((3, 4, 5), 12, seed=2)
    data = _codec(model_path).encode(cube, 0, 12)
    with pytest.raises(HsicompError, match="coded with model .* but .*other.pt is model"):
        _codec(other_model_path).decode(data, "x.hsic")
    with pytest.raises(HsicompError, match=r"x.hsic: coded with LineRWKV model .*--model"):
        get_codec("linerwkv").decode(data, "x.hsic")
    with pytest.raises(HsicompError, match="missing.pt: model file not found"):
        _codec(Path("missing.pt")).encode(cube, 0, 12)


def _repack(data: bytes, side_edit) -> bytes:
    header, side, payload = unpack(data)
    return pack(header, side_edit(bytearray(side)), payload)


def test_versions_and_side_info_are_checked(model_path: Path) -> None:
    codec = _codec(model_path)
    data = codec.encode(smooth_cube((3, 4, 5), 12, seed=4), 1, 12)

    def set_byte(pos: int, value: int):
        def edit(side: bytearray) -> bytes:
            side[pos] = value
            return bytes(side)
        return edit

    cases = [
        (set_byte(0, 9), "unsupported linerwkv layout version 9"),
        (set_byte(1, 200), "prediction arithmetic version 200"),
        (set_byte(2, 7), "unknown residual coder 7"),
        (lambda side: bytes(side[:_FIXED_SIDE + 1]), "expected 6 band statistics"),
        (lambda side: bytes(side[:10]), "corrupt side info"),
    ]
    for edit, message in cases:
        with pytest.raises(HsicompError, match=message):
            codec.decode(_repack(data, edit), "f.hsic")


def test_corrupt_payload_is_reported(model_path: Path) -> None:
    for coder in CODERS:
        codec = _codec(model_path, coder)
        data = codec.encode(smooth_cube((4, 6, 8), 12, seed=6), 0, 12)
        header, side, payload = unpack(data)
        for damaged in (payload[: len(payload) // 2], payload + b"\x00" * 8):
            with pytest.raises(HsicompError, match="f.hsic: corrupt payload"):
                codec.decode(pack(header, side, damaged), "f.hsic")


def test_command_line(model_path: Path, other_model_path: Path, tmp_path: Path) -> None:
    cube = smooth_cube((5, 6, 7), 12, seed=8)
    src, hsic, out = tmp_path / "in.npy", tmp_path / "c.hsic", tmp_path / "out.npy"
    np.save(src, cube)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hsicomp", *args], capture_output=True,
                              text=True, env=tool_env(), timeout=300)

    enc = run("encode", str(src), str(hsic), "--model", str(model_path), "--delta", "2",
              "--bit-depth", "12", "--coder", "sample-adaptive")
    assert enc.returncode == 0, enc.stderr
    assert f"{hsic.stat().st_size} bytes" in enc.stdout
    info = run("info", str(hsic))
    assert "coder: sample-adaptive" in info.stdout and "model_sha256: " in info.stdout
    dec = run("decode", str(hsic), str(out), "--model", str(model_path))
    assert dec.returncode == 0, dec.stderr
    assert np.array_equal(np.load(out), _expected(cube, 2, 12))
    for args in (["decode", str(hsic), str(out), "--model", str(other_model_path)],
                 ["decode", str(hsic), str(out)]):
        bad = run(*args)
        assert bad.returncode == 2
        assert bad.stderr.startswith("hsicomp: error: ") and bad.stderr.count("\n") == 1
        assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("coder", CODERS)
def test_band_bits_account_for_the_payload(model_path: Path, coder: str) -> None:
    cube = smooth_cube((5, 8, 12), 12, seed=12)
    cube[3] = cube[3] // 64  # a band that is far cheaper than the others
    codec = _codec(model_path, coder)
    payload = unpack(codec.encode(cube, 0, 12))[2]
    bits = codec.last_stats["band_bits"]
    assert bits.shape == (5,) and (bits >= 0).all()
    assert 8 * len(payload) - 104 <= bits.sum() <= 8 * len(payload)
    assert bits[3] < bits[2] and bits[3] < bits[4]
