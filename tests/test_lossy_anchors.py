"""The classical lossy anchors: avif, jpeg2000-lossy, jpegxl-lossy (per band) and klt."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import damaged_copies, smooth_cube
from test_plan import TINY, plan_of, refused

from hsicomp.codecs import codec_class, decode_bytes, get_codec
from hsicomp.codecs.klt import KltData, analyse, read_klt
from hsicomp.errors import HsicompError
from hsicomp.evaluation.plan import Point
from hsicomp.io.container import FLAG_LOSSY, Header, pack, unpack

BIT_DEPTH = 14
#: Each codec's rate parameter, from fine to coarse.
SWEEPS = {"avif": ("quality", [95, 70, 40, 10]),
          "jpeg2000-lossy": ("psnr", [75, 60, 45]),
          "jpegxl-lossy": ("distance", [0.3, 1.5, 6.0]),
          "klt": ("step", [8.0, 40.0, 200.0])}
CODECS = list(SWEEPS)
PER_BAND = ["avif", "jpeg2000-lossy", "jpegxl-lossy"]


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(HsicompError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def codec(name: str, value: float | None = None):
    """The codec at ``value``, by default the finest of its sweep."""
    param, values = SWEEPS[name]
    return get_codec(name, {param: values[0] if value is None else value})


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return smooth_cube((6, 24, 20), BIT_DEPTH, seed=3, noise=0.003)


@pytest.fixture(scope="module")
def encoded(cube: np.ndarray) -> dict[str, bytes]:
    return {name: codec(name).encode(cube, 0, BIT_DEPTH) for name in CODECS}


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_keeps_shape_dtype_and_bit_depth(name, cube, encoded):
    header, out = decode_bytes(encoded[name], source="mem")
    assert header.codec == name and header.shape == cube.shape
    assert header.bit_depth == BIT_DEPTH and header.delta == 0 and header.flags & FLAG_LOSSY
    assert out.dtype == np.uint16 and out.shape == cube.shape
    assert int(out.max()) < 1 << BIT_DEPTH
    assert 10 * np.log10(16383**2 / mse(cube, out)) > 35
    cls = codec_class(name)
    assert cls.lossy and cls.rate_points is not None and cls.rate_points.key == "points"
    assert get_codec(name).supports(0) and not get_codec(name).supports(1)
    one_line_error(get_codec(name).encode, cube, 1, BIT_DEPTH)


@pytest.mark.parametrize("name", CODECS)
def test_rate_falls_and_error_grows_toward_lower_quality(name, cube):
    param, values = SWEEPS[name]
    sizes, errors = [], []
    for value in values:
        data = get_codec(name, {param: value}).encode(cube, 0, BIT_DEPTH)
        sizes.append(len(data))
        errors.append(mse(cube, decode_bytes(data)[1]))
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes), sizes
    assert errors == sorted(errors) and len(set(errors)) == len(errors), errors


@pytest.mark.parametrize("name", CODECS)
def test_same_bytes_on_re_encode(name, cube, encoded):
    assert codec(name).encode(cube.copy(), 0, BIT_DEPTH) == encoded[name]


@pytest.mark.parametrize("name", CODECS)
def test_another_codec_cannot_decode_the_file(name, encoded):
    for other in [*CODECS, "jpegxl", "jpeg2000"]:
        if other != name:
            message = one_line_error(get_codec(other).decode, encoded[name], "x.hsic")
            assert message == (f"x.hsic: written by codec {name!r}, cannot be decoded by "
                               f"{other!r}")


def assert_corrupt(data: bytes) -> None:
    message = one_line_error(decode_bytes, data, source="bad.hsic")
    assert message.startswith("bad.hsic")


@pytest.mark.parametrize("name", CODECS)
def test_damaged_files_give_one_line_errors(name, encoded):
    data = encoded[name]
    rng = np.random.default_rng(1)
    for damaged in damaged_copies(data, (0, 10, len(data) // 2, len(data) - 1), 10, rng):
        assert_corrupt(damaged)
    header, side, payload = unpack(data)
    garbage = rng.bytes(len(payload))
    assert_corrupt(pack(header, side, garbage))  # the check no longer matches
    assert_corrupt(pack(header, side, payload[:-1]))
    assert_corrupt(pack(header, side[:-1], payload))
    assert_corrupt(pack(header, side + b"\x00", payload))
    assert_corrupt(pack(header, b"\x02" + side[1:], payload))
    wrong = Header(**{**vars(header), "rows": header.rows + 1})
    assert_corrupt(pack(wrong, side, payload))
    if name in PER_BAND:  # garbage codestreams under a valid check reach the library
        assert_corrupt(pack(header, side, garbage, [garbage]))


BAD = {"avif": [("quality", 100), ("quality", -1), ("quality", 50.5), ("quality", "x"),
                ("speed", 11), ("quality", True)],
       "jpeg2000-lossy": [("psnr", 0), ("psnr", 101), ("psnr", float("nan")), ("psnr", "")],
       "jpegxl-lossy": [("distance", 0), ("distance", 25.5), ("effort", 0), ("effort", 11)],
       "klt": [("step", 0), ("step", -1), ("step", float("inf")), ("effort", 11)]}


@pytest.mark.parametrize("name", CODECS)
def test_bad_parameters_are_one_line_errors(name):
    for key, value in BAD[name]:
        message = one_line_error(get_codec, name, {key: value})
        assert message.startswith(f"codec {name!r}: {key}") or "not a valid" in message
    one_line_error(get_codec, name, {"nosuch": 1})
    param, values = SWEEPS[name]
    assert get_codec(name, {param: str(values[0])}).params[param] == values[0]
    # the workflow gives a rate point as a float
    assert get_codec(name, {param: float(values[0])}).params[param] == values[0]


@pytest.mark.parametrize("name", PER_BAND)
def test_band_bits_are_the_band_codestreams(name, cube):
    coder = codec(name)
    header, side, payload = unpack(coder.encode(cube, 0, BIT_DEPTH))
    bits = coder.last_stats["band_bits"]
    assert bits.shape == (cube.shape[0],) and int(bits.sum()) == 8 * len(payload)
    fields = dict(codec_class(name).describe_side_info(side))
    assert fields["band_codestreams"] == str(cube.shape[0])
    assert codec_class(name).describe_side_info(b"") == [("side_info", "corrupt")]


@pytest.mark.parametrize("name", PER_BAND)
@pytest.mark.parametrize("bit_depth", [8, 12, 16])
def test_other_bit_depths(name, bit_depth):
    cube = smooth_cube((3, 16, 12), bit_depth, seed=bit_depth)
    header, out = decode_bytes(codec(name).encode(cube, 0, bit_depth))
    assert header.bit_depth == bit_depth and out.dtype == np.uint16
    peak = (1 << bit_depth) - 1
    assert int(out.max()) <= peak and 10 * np.log10(peak**2 / mse(cube, out)) > 30


@pytest.mark.parametrize("name", CODECS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 7), (2, 9, 1)])
def test_degenerate_shapes(name, shape):
    cube = smooth_cube(shape, 16, seed=3)
    cube.flat[0] = 65535
    header, out = decode_bytes(codec(name).encode(cube, 0, 16))
    assert header.shape == shape and out.shape == shape and out.dtype == np.uint16


def test_avif_codes_14_bit_samples_in_12_bits(cube):
    """Samples above 12 bits are shifted right and come back at the centre of their bin."""
    assert int(cube.max()) >= 1 << 13  # 14 bits used: shift 2
    coder = get_codec("avif", {"quality": 99})
    data = coder.encode(cube, 0, BIT_DEPTH)
    _, side, _ = unpack(data)
    assert side[1] == 2 and ("shift", "2 (samples >> 2 coded in 12 bits)") in \
        codec_class("avif").describe_side_info(side)
    _, out = decode_bytes(data)
    top = (1 << BIT_DEPTH) - 1
    assert np.all((out[out < top] % 4) == 2)  # bin centres (v << 2) + 2
    assert 0 < np.abs(out.astype(int) - cube).mean() < 20
    # samples that fit in 12 bits are not shifted; 13-bit ones lose one bit
    for peak, shift in ((4095, 0), (8191, 1)):
        small = (cube.astype(np.int64) * peak // int(cube.max())).astype(np.uint16)
        _, side, _ = unpack(coder.encode(small, 0, BIT_DEPTH))
        assert side[1] == shift


def test_klt_error_is_bounded_by_the_step_and_everything_is_in_the_file(cube):
    step = 40.0
    klt, y = analyse(cube, step)
    keep = len(klt.bits)
    assert 0 < keep <= cube.shape[0] and klt.matrix.shape == (cube.shape[0], keep)
    # in the transform domain, every kept component is within half a step
    assert np.abs(y - klt.symbols * step).max() <= step / 2 + 1e-9
    coder = get_codec("klt", {"step": step})
    data = coder.encode(cube, 0, BIT_DEPTH)
    header, side, payload = unpack(data)
    # the decoder reads exactly what the encoder quantised, from the file alone
    read = read_klt(header, side, payload, "mem")
    assert read.bits == klt.bits and read.step == step
    np.testing.assert_array_equal(read.mean, klt.mean)
    np.testing.assert_array_equal(read.matrix, klt.matrix)
    np.testing.assert_array_equal(read.symbols, klt.symbols)
    _, out = decode_bytes(data)
    # an orthonormal transform: the sample error is about the component error
    per_pixel = np.sqrt(((out.astype(float) - cube) ** 2).sum(axis=0))
    assert per_pixel.max() <= np.sqrt(cube.shape[0]) * (step / 2 + 1)
    # the mean vector and the matrix are in the side info, counted in the file's size
    stats = coder.last_stats
    assert stats["side_bytes"] == len(side) and stats["component_bytes"] == len(payload)
    assert len(side) >= 9 + stats["mean_bytes"] + stats["matrix_bytes"] > 9
    assert "band_bits" not in stats
    fields = dict(codec_class("klt").describe_side_info(side))
    assert fields["components"] == str(keep) and fields["step"] == "40"
    assert fields["matrix_bytes"] == str(stats["matrix_bytes"])


def test_klt_synthesis_is_integer_exact():
    """The synthesis sum is exact in float64: it equals the integer matrix product."""
    rng = np.random.default_rng(4)
    bits = [15, 9, 4]
    matrix = rng.integers(-(1 << 15), 1 << 15, size=(5, 3))
    symbols = rng.integers(-(1 << 16), 1 << 16, size=(3, 7))
    klt = KltData(step=3.7, mean=rng.integers(0, 9000, 5), matrix=matrix, bits=bits,
                  symbols=symbols)
    exact = (matrix << (15 - np.array(bits))) @ symbols  # int64, no rounding
    expected = np.clip(np.rint(exact * (3.7 / 2**15) + klt.mean[:, None]), 0, 65535)
    np.testing.assert_array_equal(klt.synthesis(16), expected)


def test_klt_of_a_constant_cube_and_a_single_band():
    flat = np.full((4, 5, 6), 1234, np.uint16)
    data = get_codec("klt").encode(flat, 0, 12)
    header, side, payload = unpack(data)
    assert payload == b"" and dict(codec_class("klt").describe_side_info(side))[
        "components"] == "0"
    np.testing.assert_array_equal(decode_bytes(data)[1], flat)
    one = smooth_cube((1, 9, 7), 12, seed=1)
    _, out = decode_bytes(get_codec("klt", {"step": 4.0}).encode(one, 0, 12))
    assert np.abs(out.astype(int) - one).max() <= 3


def test_klt_refuses_a_step_too_small_for_16_bit_components(cube):
    message = one_line_error(get_codec("klt", {"step": 0.01}).encode, cube, 0, BIT_DEPTH)
    assert "too small" in message


def test_a_points_entry_plans_one_point_per_value():
    config = dict(TINY, codecs={
        "avif": {"codec": "avif", "points": [90, 70, 50]},
        "klt": {"points": [800, 200]},
        "jxl": {"codec": "jpegxl-lossy", "points": [1, 4.5], "params": {"effort": 5}}})
    plan = plan_of(config)
    assert plan.models("avif") == ["q90", "q70", "q50"]
    assert plan.models("klt") == ["s800", "s200"]
    assert plan.models("jxl") == ["d1", "d4.5"]
    assert Point("tiny", "avif", "q70", 0) in list(plan.points())
    assert plan.deltas("klt") == [0]
    params = plan.job_params("jxl", "d4.5", "tiny", 1)
    assert params == {"effort": 5, "distance": 4.5}
    assert get_codec("jpegxl-lossy", params).params["distance"] == 4.5
    assert get_codec("avif", plan.job_params("avif", "q90", "tiny", 1)).params["quality"] == 90
    config["codecs"] = {"avif": {}}
    assert refused(config) == "codecs.avif: codec avif needs points (rate points)"
    config["codecs"] = {"avif": {"points": [100]}}
    assert refused(config).startswith("codecs.avif.points: codec 'avif': quality must be")
    config["codecs"] = {"klt": {"points": [100], "params": {"step": 5}}}
    assert "step" in refused(config)
