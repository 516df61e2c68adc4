"""The linerwkv-lms codec and the band-line CCSDS-123 predictor it shares with ccsds123."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import perturbed_model, smooth_cube, tool_env, version1_file

from hsicomp.codecs import get_codec
from hsicomp.codecs.ccsds123 import Ccsds123Codec
from hsicomp.codecs.linerwkv import _Stats, band_statistics
from hsicomp.codecs.linerwkv_lms import _FIXED_SIDE, LineRWKVLmsCodec, _Run
from hsicomp.codecs.lms import C_INPUTS, code_line
from hsicomp.entropy.adaptive import encode_cube
from hsicomp.errors import HsicompError
from hsicomp.io.container import pack, unpack
from hsicomp.models.checkpoint import save_model

CODERS = ("arith", "sample-adaptive")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "xs.pt"
    save_model(path, perturbed_model("XS", 1), "XS")
    return path


def _codec(model: Path, coder: str = "arith", **extra: object):
    """The codec with the network always used (``network`` ``on``) unless ``extra`` says."""
    return get_codec("linerwkv-lms", {"model": str(model), "coder": coder, "network": "on",
                                      **extra})


def _roundtrip(codec, cube: np.ndarray, delta: int, bit_depth: int) -> bytes:
    data = codec.encode(cube, delta, bit_depth)
    out = codec.decode(data)
    assert out.dtype == np.uint16 and out.shape == cube.shape
    err = np.abs(out.astype(np.int64) - cube)
    assert int(err.max()) <= delta
    if delta == 0:
        assert np.array_equal(out, cube)
    return data


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("delta", [0, 1, 4, 40])
def test_roundtrip_within_delta(model_path: Path, coder: str, delta: int) -> None:
    cube = smooth_cube((6, 9, 11), 12, seed=delta)
    data = _roundtrip(_codec(model_path, coder), cube, delta, 12)
    header = unpack(data)[0]
    assert (header.codec, header.shape, header.delta) == ("linerwkv-lms", cube.shape, delta)


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 5), (2, 4, 1), (1, 5, 3), (5, 2, 2)])
def test_small_and_degenerate_shapes(model_path: Path, shape: tuple[int, int, int]) -> None:
    cube = smooth_cube(shape, 10, seed=sum(shape))
    for coder in CODERS:
        for delta in (0, 2):
            _roundtrip(_codec(model_path, coder), cube, delta, 10)


def test_extreme_values(model_path: Path) -> None:
    cube = np.zeros((4, 5, 6), np.uint16)
    cube[::2] = 4095
    cube[1, 2, 3] = 0
    for delta in (0, 3):
        _roundtrip(_codec(model_path), cube, delta, 12)


def test_lossless_encoder_matches_the_band_by_band_decoder(model_path: Path) -> None:
    """The all-at-once network predictions of a lossless encode equal the stepper's."""
    cube = smooth_cube((7, 10, 13), 14, seed=5)
    codec = _codec(model_path)
    weights, _ = codec._predictor()
    settings = codec._ccsds._settings(14)
    stats = _Stats(*band_statistics(cube))
    results = []
    for known in (codec._lossless_predictions(weights, cube, stats, 14), None):
        codes = np.empty(cube.shape, np.int32)
        rec = np.empty(cube.shape, np.int32)
        run = _Run(settings, 8, 14, 0, cube.shape)
        assert LineRWKVLmsCodec._code(weights, run, stats, cube, codes, rec, False, known) == -1
        assert np.array_equal(rec, cube)
        results.append((codes, run.weights))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def _lines(cube: np.ndarray, ext4: np.ndarray | None, ext_init: int, delta: int = 0,
           cascade: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Code a cube with :func:`code_line` in BIL order (16-bit range, default settings)."""
    bands, rows, cols = cube.shape
    codes = np.empty(cube.shape, np.int32)
    rec = np.empty(cube.shape, np.int32)
    dc = np.zeros(cube.shape, np.int32)
    weights = np.zeros((bands, 7), np.int64)
    zero = np.zeros(cols, np.int64)
    res1 = np.zeros(cube.shape, np.int32)
    w2 = np.zeros((bands, C_INPUTS), np.int64)
    for y in range(rows):
        for z in range(bands):
            ext = zero if ext4 is None or y == 0 else ext4[z, y]
            n_ext = 0 if ext4 is None or y == 0 else 1
            assert code_line(z, y, cube, codes, rec, dc, weights, ext, n_ext, False, True, 16,
                             delta, True, 0, 3, 19, 64, -1, 3, 64, ext_init, cascade, res1,
                             w2) == -1
    return codes, rec


def test_band_line_predictor_is_the_ccsds123_predictor() -> None:
    """Without an external input, BIL band-lines give the ccsds123 codec's BSQ result, with
    and without the second stage."""
    cube = smooth_cube((5, 9, 12), 14, seed=8)
    for delta, cascade in itertools.product((0, 3), (0, 5)):
        codes, rec = _lines(cube, None, 0, delta, cascade)
        settings = Ccsds123Codec(coder="arith", cascade=cascade)._settings(16)
        ref_codes = np.empty(cube.shape, np.int32)
        ref_rec = np.empty(cube.shape, np.int32)
        settings.run(cube, ref_codes, ref_rec, False, 16, delta)
        assert np.array_equal(codes, ref_codes) and np.array_equal(rec, ref_rec)


def test_external_prediction_is_used() -> None:
    """An oracle external prediction makes the residuals vanish; a useless one is learnt off."""
    cube = smooth_cube((6, 16, 32), 10, seed=9, noise=0.01)
    oracle = 4 * cube.astype(np.int64)
    noise = np.random.default_rng(1).integers(0, 4 << 10, size=cube.shape)

    def bits(codes: np.ndarray) -> int:
        pred = np.full(codes.shape, 1 << 15, np.int64)
        return 8 * len(encode_cube(codes.astype(np.int64), pred, (1 << 16) - 1))

    plain = bits(_lines(cube, None, 0)[0])
    with_oracle = bits(_lines(cube, oracle, 8)[0])
    with_noise = bits(_lines(cube, noise, 0)[0])
    assert with_oracle < 0.6 * plain, (with_oracle, plain)
    assert with_noise < 1.2 * plain, (with_noise, plain)


def test_deterministic_bytes_whatever_the_threads(model_path: Path) -> None:
    cube = smooth_cube((5, 8, 12), 14, seed=3)
    for delta in (0, 2):
        one = _codec(model_path, threads=1).encode(cube, delta, 14)
        two = _codec(model_path, threads=2).encode(cube, delta, 14)
        assert one == two


def test_parameters_and_side_info_are_checked(model_path: Path) -> None:
    with pytest.raises(HsicompError, match="ext_init must be an integer in 0..8"):
        _codec(model_path, ext_init=9)
    with pytest.raises(HsicompError, match="P must be in 0..15"):
        _codec(model_path, P=16)
    codec = _codec(model_path)
    data = codec.encode(smooth_cube((3, 4, 5), 12, seed=4), 1, 12)
    header, side, payload = unpack(data)

    def with_byte(pos: int, value: int) -> bytes:
        edited = bytearray(side)
        edited[pos] = value
        return pack(header, bytes(edited), payload)

    cases = [
        (with_byte(0, 9), "unsupported linerwkv-lms layout version 9"),
        (with_byte(1, 200), "prediction arithmetic version 200"),
        (with_byte(34, 9), "corrupt side info \\(ext_init 9\\)"),
        (with_byte(35 + 5, 3), "corrupt side info \\(omega must be in 4..19"),
        (pack(header, side[:_FIXED_SIDE + 1], payload), "expected 6 band statistics"),
        (pack(header, side[:10], payload), "corrupt side info"),
        (pack(header, side, payload[: len(payload) // 2]), "corrupt payload"),
    ]
    for damaged, message in cases:
        with pytest.raises(HsicompError, match=message):
            codec.decode(damaged, "f.hsic")


def test_second_stage_is_on_by_default_and_version_1_files_are_read(model_path: Path) -> None:
    cube = smooth_cube((4, 6, 9), 12, seed=6)
    data = _roundtrip(_codec(model_path), cube, 2, 12)
    fields = dict(LineRWKVLmsCodec.describe_side_info(unpack(data)[1]))
    assert fields["cascade"] == "5" and fields["P"] == "3"
    assert _roundtrip(_codec(model_path, cascade=0), cube, 2, 12) != data
    # a side-info layout 1 file (15-byte ccsds123 settings, no second stage, container 1)
    plain = _roundtrip(_codec(model_path, cascade=0), cube, 2, 12)
    header, side, payload = unpack(plain)
    fixed = _FIXED_SIDE - 16
    old = bytes([1]) + side[1:fixed] + b"\x01" + side[fixed + 1:_FIXED_SIDE - 1] \
        + side[_FIXED_SIDE:]
    assert side[fixed] == 2 and side[_FIXED_SIDE - 1] == 0
    out = _codec(model_path).decode(version1_file(pack(header, old, payload)))
    assert np.array_equal(out, _codec(model_path).decode(plain))
    assert "cascade" not in dict(LineRWKVLmsCodec.describe_side_info(old))


def test_model_identity_is_checked(model_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    save_model(other, perturbed_model("XS", 2), "XS")
    data = _codec(model_path).encode(smooth_cube((3, 4, 5), 12, seed=2), 0, 12)
    with pytest.raises(HsicompError, match="coded with model .* but .*other.pt is model"):
        _codec(other).decode(data, "x.hsic")
    with pytest.raises(HsicompError, match=r"x.hsic: coded with LineRWKV model .*--model"):
        get_codec("linerwkv-lms").decode(data, "x.hsic")


def test_command_line(model_path: Path, tmp_path: Path) -> None:
    cube = smooth_cube((5, 6, 7), 12, seed=8)
    src, hsic, out = tmp_path / "in.npy", tmp_path / "c.hsic", tmp_path / "out.npy"
    np.save(src, cube)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hsicomp", *args], capture_output=True,
                              text=True, env=tool_env(), timeout=300)

    enc = run("encode", str(src), str(hsic), "--codec", "linerwkv-lms", "--model",
              str(model_path), "--delta", "2", "--bit-depth", "12", "--param", "network=on")
    assert enc.returncode == 0, enc.stderr
    info = run("info", str(hsic))
    assert "network: used, ext_init 8/8" in info.stdout and "model_sha256: " in info.stdout, \
        info.stdout
    dec = run("decode", str(hsic), str(out), "--model", str(model_path))
    assert dec.returncode == 0, dec.stderr
    assert int(np.abs(np.load(out).astype(np.int64) - cube).max()) <= 2


@pytest.mark.parametrize("coder", CODERS)
def test_band_bits_account_for_the_payload(model_path: Path, coder: str) -> None:
    cube = smooth_cube((5, 8, 12), 12, seed=12)
    codec = _codec(model_path, coder)
    payload = unpack(codec.encode(cube, 0, 12))[2]
    bits = codec.last_stats["band_bits"]
    assert bits.shape == (5,) and (bits > 0).all()
    assert 8 * len(payload) - 104 <= bits.sum() <= 8 * len(payload)


@pytest.mark.parametrize("delta", [0, 3])
def test_auto_keeps_the_smaller_of_with_and_without_the_network(model_path: Path,
                                                                delta: int) -> None:
    """network auto: the file with the network, or the one ccsds123 with the same predictor
    settings writes (plus the fixed side info), whichever is smaller; the latter decodes
    without the model."""
    settings = {"P": 2, "nu_max": 5, "cascade": 5}
    for seed in (3, 4):
        cube = smooth_cube((6, 9, 11), 12, seed=seed)
        on = _codec(model_path, **settings).encode(cube, delta, 12)
        auto = _codec(model_path, network="auto", **settings).encode(cube, delta, 12)
        plain = get_codec("ccsds123", {"coder": "arith", **settings}).encode(cube, delta, 12)
        header, side, payload = unpack(auto)
        without = side[2 + 32] == 255
        overhead = len(side) - len(unpack(plain)[1])
        assert overhead == 3 + 32 or not without
        # the fixed side info and the longer codec name in the header
        assert len(auto) == min(len(on), len(plain) + 3 + 32 + len("linerwkv-lms") - 8)
        if without:
            assert payload == unpack(plain)[2]
            fields = dict(LineRWKVLmsCodec.describe_side_info(side))
            assert fields["network"] == "not used (coded without it)"
            decoded = get_codec("linerwkv-lms").decode(auto)  # no model needed
        else:
            assert auto == on
            decoded = _codec(model_path).decode(auto)
        assert int(np.abs(decoded.astype(np.int64) - cube).max()) <= delta
    with pytest.raises(HsicompError, match="network must be one of auto, on"):
        _codec(model_path, network="off")

