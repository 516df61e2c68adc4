"""The ccsds123 codec: predictor against a plain-Python reference, exact round trips, error
bound, stored parameters, damaged files, a golden bitstream and the EnMAP anchor rates."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from helpers import enmap_crop, smooth_cube, version1_file

from hsicomp.codecs import decode_bytes, get_codec
from hsicomp.codecs.ccsds123 import (
    _SIDE,
    LOCAL_SUMS,
    MODES,
    Ccsds123Codec,
    _Settings,
)
from hsicomp.errors import HsicompError
from hsicomp.io.container import Header, pack, unpack

CODERS = ("sample-adaptive", "arith")


# --------------------------------------------------------------------------- helpers


def _max_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def _roundtrip(cube: np.ndarray, delta: int, bit_depth: int, **params: object) -> bytes:
    data = get_codec("ccsds123", params).encode(cube, delta, bit_depth)
    header, out = decode_bytes(data, source="t.hsic")
    assert header.codec == "ccsds123" and header.delta == delta
    assert out.dtype == np.uint16 and out.shape == cube.shape
    if delta == 0:
        np.testing.assert_array_equal(out, cube)
    else:
        assert _max_error(out, cube) <= delta
    return data


def _assert_corrupt(data: bytes) -> None:
    with pytest.raises(HsicompError) as info:
        decode_bytes(data, source="bad.hsic")
    message = str(info.value)
    assert "\n" not in message and message.startswith("bad.hsic: "), message


# --------------------------------------------------------------------------- reference


def _reference(cube: np.ndarray, delta: int, d: int, full: bool, kind: str, p: int,
               omega: int, register: int, nu_min: int, nu_max: int, t_inc: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Mapped quantizer indices and reconstruction, written from the standard with Python ints."""
    bands, rows, cols = cube.shape
    s_min, s_max, s_mid = 0, 2**d - 1, 2 ** (d - 1)
    m = delta
    rec = [[[0] * cols for _ in range(rows)] for _ in range(bands)]
    cen = [[[0] * cols for _ in range(rows)] for _ in range(bands)]
    codes = np.zeros(cube.shape, np.int64)

    def mod_r(v: int) -> int:
        return ((v + 2 ** (register - 1)) % 2**register) - 2 ** (register - 1)

    def local_sum(z: int, y: int, x: int) -> int:
        s = rec[z]
        if y == 0:
            if kind in ("wide_neighbour", "wide_column"):
                return 4 * s[0][x - 1]
            return 4 * rec[z - 1][0][x - 1] if z > 0 else 4 * s_mid
        if kind.endswith("column") or cols == 1:
            return 4 * s[y - 1][x]
        if kind == "wide_neighbour":
            if x == 0:
                return 2 * (s[y - 1][x] + s[y - 1][x + 1])
            if x == cols - 1:
                return s[y][x - 1] + s[y - 1][x - 1] + 2 * s[y - 1][x]
            return s[y][x - 1] + s[y - 1][x - 1] + s[y - 1][x] + s[y - 1][x + 1]
        if x == 0:
            return 2 * (s[y - 1][x] + s[y - 1][x + 1])
        if x == cols - 1:
            return 2 * (s[y - 1][x - 1] + s[y - 1][x])
        return s[y - 1][x - 1] + 2 * s[y - 1][x] + s[y - 1][x + 1]

    for z in range(bands):
        pstar = min(z, p)
        weights = [0, 0, 0] if full else []
        w = 7 * 2**omega // 8
        for _ in range(pstar):
            weights.append(w)
            w //= 8
        for y in range(rows):
            for x in range(cols):
                t = y * cols + x
                s = int(cube[z, y, x])
                if t == 0:
                    s_tilde = 2 * rec[z - 1][0][0] if pstar > 0 else 2 * s_mid
                    s_hat = s_tilde // 2
                    q = s - s_hat  # the first sample is quantized losslessly
                    theta = min(s_hat - s_min, s_max - s_hat)
                else:
                    sigma = local_sum(z, y, x)
                    u = []
                    if full:
                        if y == 0:
                            u = [0, 0, 0]
                        elif x == 0:
                            u = [4 * rec[z][y - 1][x] - sigma] * 3
                        else:
                            u = [4 * rec[z][y - 1][x] - sigma, 4 * rec[z][y][x - 1] - sigma,
                                 4 * rec[z][y - 1][x - 1] - sigma]
                    u += [cen[z - k][y][x] for k in range(1, pstar + 1)]
                    dhat = sum(a * b for a, b in zip(weights, u, strict=True))
                    s_breve = mod_r(dhat + 2**omega * (sigma - 4 * s_mid)) \
                        + 2 ** (omega + 2) * s_mid + 2 ** (omega + 1)
                    s_breve = min(max(s_breve, 2 ** (omega + 2) * s_min),
                                  2 ** (omega + 2) * s_max + 2 ** (omega + 1))
                    s_tilde = s_breve // 2 ** (omega + 1)
                    s_hat = s_tilde // 2
                    diff = s - s_hat
                    q = (1 if diff >= 0 else -1) * ((abs(diff) + m) // (2 * m + 1))
                    theta = min((s_hat - s_min + m) // (2 * m + 1),
                                (s_max - s_hat + m) // (2 * m + 1))
                if abs(q) > theta:
                    codes[z, y, x] = abs(q) + theta
                elif 0 <= (-1) ** s_tilde * q <= theta:
                    codes[z, y, x] = 2 * abs(q)
                else:
                    codes[z, y, x] = 2 * abs(q) - 1
                step = 1 if t == 0 else 2 * m + 1
                s_rec = min(max(s_hat + q * step, s_min), s_max)
                rec[z][y][x] = s_rec
                if t == 0:
                    continue
                cen[z][y][x] = 4 * s_rec - sigma
                e = 2 * s_rec - s_tilde
                rho = min(max(nu_min + (t - cols) // t_inc, nu_min), nu_max) + d - omega
                sign = 1 if e >= 0 else -1
                for i, ui in enumerate(u):
                    # floor((sgn(e) 2**-rho u + 1) / 2), exactly, with rationals
                    num = sign * ui * 2 ** max(-rho, 0) + 2 ** max(rho, 0)
                    inc = num // 2 ** (max(rho, 0) + 1)
                    weights[i] = min(max(weights[i] + inc, -(2 ** (omega + 2))),
                                     2 ** (omega + 2) - 1)
    return codes, np.asarray(rec, dtype=np.int64)


def _kernel(cube: np.ndarray, delta: int, d: int, full: bool, kind: str, p: int, omega: int,
            register: int, nu_min: int, nu_max: int, t_inc: int, coder: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    settings = _Settings(coder, 0 if full else 1, LOCAL_SUMS.index(kind), p, omega, register,
                         nu_min, nu_max, t_inc, 18, 1, 0, 6)
    codes = np.empty(cube.shape, np.int32)
    rec = np.empty(cube.shape, np.int32)
    assert settings.run(cube, codes, rec, False, d, delta) == -1
    return codes, rec


REFERENCE_CASES = [
    # (shape, bit depth, delta, full, local sum, P, omega, R, nu_min, nu_max, t_inc)
    ((4, 5, 6), 16, 0, True, "wide_neighbour", 3, 19, 64, -1, 3, 16),
    ((4, 5, 6), 12, 2, True, "narrow_neighbour", 2, 13, 64, -6, 9, 16),
    ((5, 4, 7), 8, 0, False, "wide_column", 15, 4, 32, 0, 0, 16),
    ((3, 6, 5), 16, 7, False, "narrow_column", 1, 19, 40, 2, 5, 32),
    ((6, 3, 1), 10, 1, True, "narrow_neighbour", 4, 8, 32, -3, 9, 16),
    ((3, 1, 9), 16, 0, True, "wide_neighbour", 0, 10, 64, 9, 9, 2048),
    # register 32 with Omega 14, D 16: the register really wraps on dark samples
    ((4, 5, 6), 16, 3, True, "wide_neighbour", 3, 14, 32, -1, 3, 16),
]


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_predictor_matches_reference(case: tuple) -> None:
    shape, d, delta, *rest = case
    rng = np.random.default_rng(len(REFERENCE_CASES) + d + delta)
    smooth = smooth_cube(shape, d, seed=d, noise=0.01)
    noisy = rng.integers(0, 2**d, size=shape, dtype=np.uint16)
    dark = (smooth >> (d - 3)).astype(np.uint16)  # low values: clipping near s_min
    for cube in (smooth, noisy, dark):
        want_codes, want_rec = _reference(cube, delta, d, *rest)
        codes, rec = _kernel(cube, delta, d, *rest)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(rec, want_rec)


def test_decoder_reproduces_encoder_reconstruction() -> None:
    cube = smooth_cube((7, 9, 11), 14, seed=3, noise=0.01)
    for delta, coder in itertools.product((0, 2, 9), ("sample-adaptive", "arith")):
        _, rec = _kernel(cube, delta, 14, True, "wide_neighbour", 3, 19, 64, -1, 3, 64,
                         coder=CODERS.index(coder))
        _, out = decode_bytes(get_codec("ccsds123", {"coder": coder}).encode(cube, delta, 14))
        np.testing.assert_array_equal(out, rec)


# --------------------------------------------------------------------------- round trips

SHAPES = [(1, 5, 7), (4, 1, 9), (5, 8, 1), (2, 6, 5), (3, 1, 1), (1, 1, 1), (6, 7, 8)]


@pytest.mark.parametrize(("mode", "local_sum", "coder"),
                         list(itertools.product(MODES, LOCAL_SUMS, CODERS)))
def test_round_trip_every_configuration(mode: str, local_sum: str, coder: str) -> None:
    params = {"mode": mode, "local_sum": local_sum, "coder": coder, "P": 4}
    for i, shape in enumerate(SHAPES):  # P = 4 exceeds the band count of most shapes
        cube = smooth_cube(shape, 12, seed=i, noise=0.01)
        for delta in (0, 1, 4):
            _roundtrip(cube, delta, 12, **params)


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("bit_depth", [1, 2, 8, 12, 16])
def test_extreme_values(coder: str, bit_depth: int) -> None:
    top = (1 << bit_depth) - 1
    rng = np.random.default_rng(bit_depth)
    shape = (4, 6, 5)
    cubes = [np.zeros(shape, np.uint16), np.full(shape, top, np.uint16),
             rng.integers(0, top + 1, size=shape, dtype=np.uint16),
             np.where(rng.random(shape) < 0.5, 0, top).astype(np.uint16)]
    for cube in cubes:
        for delta in sorted({d for d in (0, 1, 3, 1000, top) if d <= top}):
            _roundtrip(cube, delta, bit_depth, coder=coder)


@pytest.mark.parametrize("coder", CODERS)
def test_small_register_and_extreme_parameters(coder: str) -> None:
    cube = smooth_cube((5, 9, 8), 16, seed=4, noise=0.01)
    cube[:, :3] //= 64  # dark corner: the 32-bit register wraps
    for params in ({"omega": 14, "register": 32},
                   {"omega": 4, "nu_min": -6, "nu_max": -6, "t_inc": 16, "P": 15},
                   {"omega": 19, "nu_min": 9, "nu_max": 9, "t_inc": 2048, "P": 0},
                   {"mode": "reduced", "P": 0}):
        for delta in (0, 5):
            _roundtrip(cube, delta, 16, coder=coder, **params)


def test_near_lossless_rates_fall_with_delta() -> None:
    cube = smooth_cube((8, 16, 16), 14, seed=5, noise=0.01)
    for coder in CODERS:
        sizes = [len(_roundtrip(cube, delta, 14, coder=coder)) for delta in (0, 1, 3, 10)]
        assert sizes == sorted(sizes, reverse=True)
        assert 8 * sizes[0] / cube.size < 14


# --------------------------------------------------------------------------- parameters


def test_parameters_are_stored_in_the_file() -> None:
    cube = smooth_cube((6, 8, 9), 12, seed=6, noise=0.01)
    params = {"coder": "arith", "mode": "reduced", "local_sum": "narrow_column", "P": "5",
              "omega": "10", "register": "40", "nu_min": "0", "nu_max": "5", "t_inc": "32",
              "u_max": "12", "gamma0": "2", "k_init": "1", "gamma_star": "7"}
    codec = get_codec("ccsds123", params)
    assert codec.params["P"] == 5 and codec.params["nu_min"] == 0
    for coder in CODERS:
        codec = get_codec("ccsds123", {**params, "coder": coder})
        data = codec.encode(cube, 2, 12)
        default = get_codec("ccsds123")
        out = default.decode(data)
        assert _max_error(out, cube) <= 2
        # another configuration decodes it the same way: the file's parameters count
        other = get_codec("ccsds123", {"coder": "arith" if coder != "arith" else
                                       "sample-adaptive", "P": 0, "omega": 4})
        np.testing.assert_array_equal(other.decode(data), out)
        _, side, _ = unpack(data)
        fields = dict(Ccsds123Codec.describe_side_info(side))
        assert fields == {"coder": coder, "mode": "reduced", "local_sum": "narrow_column",
                          "P": "5", "omega": "10", "register": "40", "nu_min": "0",
                          "nu_max": "5", "t_inc": "32", "u_max": "12", "gamma0": "2",
                          "k_init": "1", "gamma_star": "7"}
        # changing a stored parameter changes the decoded cube (or is detected)
        changed = bytearray(side)
        changed[5] = 11  # omega
        try:
            again = default.decode(pack(unpack(data)[0], bytes(changed), unpack(data)[2]))
        except HsicompError:
            continue
        assert not np.array_equal(again, out)


def test_k_init_is_clipped_to_the_dynamic_range() -> None:
    cube = smooth_cube((3, 4, 5), 4, seed=7, noise=0.01)
    data = _roundtrip(cube, 0, 4, k_init=14)
    assert dict(Ccsds123Codec.describe_side_info(unpack(data)[1]))["k_init"] == "2"


@pytest.mark.parametrize(("params", "match"), [
    ({"coder": "hybrid"}, "coder must be one of"),
    ({"mode": "half"}, "mode must be one of"),
    ({"local_sum": "wide"}, "local_sum must be one of"),
    ({"P": 16}, "P must be in 0..15"),
    ({"P": -1}, "P must be in 0..15"),
    ({"omega": 3}, "omega must be in 4..19"),
    ({"omega": 20}, "omega must be in 4..19"),
    ({"register": 31}, "register must be in"),
    ({"register": 65}, "register must be in"),
    ({"nu_min": -7}, "nu_min must be in -6..9"),
    ({"nu_min": 4, "nu_max": 3}, "nu_max must be in 4..9"),
    ({"t_inc": 100}, "t_inc must be a power of two"),
    ({"t_inc": 8}, "t_inc must be a power of two"),
    ({"u_max": 7}, "u_max"),
    ({"gamma0": 0}, "gamma0"),
    ({"k_init": 15}, "k_init must be in 0..14"),
    ({"gamma_star": 12}, "gamma_star"),
    ({"P": "three"}, "not a valid int"),
    ({"P": True}, "must be an integer"),
])
def test_parameter_errors(params: dict, match: str) -> None:
    with pytest.raises(HsicompError, match=match) as info:
        get_codec("ccsds123", params)
    assert "\n" not in str(info.value)


def test_register_too_small_for_the_bit_depth() -> None:
    codec = get_codec("ccsds123", {"register": 32})  # 16 + 19 + 2 = 37 bits needed
    with pytest.raises(HsicompError, match=r"register must be in 37\.\.64"):
        codec.encode(smooth_cube((2, 3, 4), 16, seed=0, noise=0.01), 0, 16)
    _roundtrip(smooth_cube((2, 3, 4), 11, seed=0, noise=0.01), 0, 11, register=32)


# --------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def encoded() -> dict[str, bytes]:
    cube = smooth_cube((5, 9, 10), 14, seed=8, noise=0.01)
    return {f"{coder}-{delta}": get_codec("ccsds123", {"coder": coder}).encode(cube, delta, 14)
            for coder in CODERS for delta in (0, 3)}


@pytest.mark.parametrize("key", ["sample-adaptive-0", "sample-adaptive-3", "arith-0",
                                 "arith-3"])
def test_damaged_payload(key: str, encoded: dict[str, bytes]) -> None:
    data = encoded[key]
    header, side, payload = unpack(data)
    rng = np.random.default_rng(9)
    _assert_corrupt(pack(header, side, rng.bytes(len(payload))))
    _assert_corrupt(pack(header, side, payload[: len(payload) // 2]))
    _assert_corrupt(pack(header, side, payload + b"\x00\x00"))
    _assert_corrupt(pack(header, side, b""))
    for field, value in (("rows", header.rows + 1), ("cols", header.cols + 3),
                         ("bands", header.bands + 1)):
        _assert_corrupt(pack(Header(**{**vars(header), field: value}), side, payload))
    # bit flips give an error or a cube (a flip the coder cannot notice); never a crash
    for pos in rng.integers(0, len(payload), 20):
        flipped = bytearray(payload)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            _, out = decode_bytes(pack(header, side, bytes(flipped)), source="bad.hsic")
        except HsicompError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("bad.hsic: ")
        else:
            assert out.shape == header.shape and int(out.max()) < 1 << 14
    # whole-file damage is caught by the container
    for cut in (0, 10, len(data) - 1):
        _assert_corrupt(data[:cut])


def test_damaged_side_info(encoded: dict[str, bytes]) -> None:
    header, side, payload = unpack(encoded["sample-adaptive-0"])
    _assert_corrupt(pack(header, side[:-1], payload))
    _assert_corrupt(pack(header, side + b"\x00", payload))
    _assert_corrupt(pack(header, b"", payload))
    for index, value in ((0, 2), (1, 2), (2, 2), (3, 4), (4, 16), (5, 3), (5, 20), (6, 31),
                         (6, 65), (7, 0xF9), (8, 0x80), (11, 7), (12, 9), (13, 13),
                         (14, 0)):
        bad = bytearray(side)
        bad[index] = value
        _assert_corrupt(pack(header, bytes(bad), payload))
    bad = bytearray(side)
    bad[9:11] = (100).to_bytes(2, "little")  # t_inc
    _assert_corrupt(pack(header, bytes(bad), payload))
    assert len(side) == _SIDE.size


def test_wrong_codec() -> None:
    cube = smooth_cube((2, 3, 4), 8, seed=1, noise=0.01)
    data = get_codec("jpegls").encode(cube, 0, 8)
    with pytest.raises(HsicompError, match="written by codec 'jpegls'"):
        get_codec("ccsds123").decode(data, source="x.hsic")


# --------------------------------------------------------------------------- second stage


@pytest.mark.parametrize("coder", CODERS)
def test_second_stage_round_trip_and_side_info(coder: str) -> None:
    for i, shape in enumerate(SHAPES):
        cube = smooth_cube(shape, 12, seed=i, noise=0.01)
        for delta in (0, 1, 4):
            data = _roundtrip(cube, delta, 12, coder=coder, P=4, cascade=5)
            _, side, _ = unpack(data)
            assert len(side) == _SIDE.size + 1 and side[0] == 2 and side[-1] == 5
            assert dict(Ccsds123Codec.describe_side_info(side))["cascade"] == "5"
    # without the second stage the side info keeps layout version 1
    _, side, _ = unpack(_roundtrip(cube, 1, 12, coder=coder, cascade=0))
    assert len(side) == _SIDE.size and side[0] == 1
    assert "cascade" not in dict(Ccsds123Codec.describe_side_info(side))


def test_second_stage_changes_and_is_stored() -> None:
    """The decoder follows the file's cascade value, and the stage changes the prediction."""
    cube = smooth_cube((6, 9, 10), 12, seed=2, noise=0.01)
    data = get_codec("ccsds123", {"coder": "arith", "cascade": 4}).encode(cube, 0, 12)
    plain = get_codec("ccsds123", {"coder": "arith"}).encode(cube, 0, 12)
    assert unpack(data)[2] != unpack(plain)[2]
    header, side, payload = unpack(data)
    for value in (3, 0):  # another step (or none) decodes the same payload differently
        other = bytearray(side)
        other[-1] = value
        try:
            out = get_codec("ccsds123").decode(pack(header, bytes(other), payload))
        except HsicompError:
            continue
        assert not np.array_equal(out, cube)


def test_second_stage_learns_spectrally_correlated_residuals() -> None:
    """Noise that follows the previous band is invisible to a spatial-only first stage (P = 0)
    but predictable from the previous band's residual: the second stage must take it."""
    rng = np.random.default_rng(1)
    base = smooth_cube((8, 16, 32), 12, seed=1, noise=0.0).astype(np.float64)
    noise = rng.normal(size=base.shape)
    for z in range(1, base.shape[0]):
        noise[z] = 0.95 * noise[z - 1] + 0.3 * noise[z]
    cube = np.clip(np.rint(base + 30 * noise), 0, 4095).astype(np.uint16)
    for delta in (0, 3):
        plain = len(_roundtrip(cube, delta, 12, coder="arith", P=0))
        second = len(_roundtrip(cube, delta, 12, coder="arith", P=0, cascade=5))
        assert second < 0.96 * plain, (second, plain)


def test_damaged_second_stage_side_info() -> None:
    cube = smooth_cube((3, 4, 5), 12, seed=1, noise=0.01)
    header, side, payload = unpack(get_codec("ccsds123", {"cascade": 5}).encode(cube, 1, 12))
    _assert_corrupt(pack(header, side[:-1], payload))  # version 2 without its cascade byte
    _assert_corrupt(pack(header, side + b"\x05", payload))
    _assert_corrupt(pack(header, side[:-1] + b"\x10", payload))  # cascade 16
    with pytest.raises(HsicompError, match="cascade must be in 0..15"):
        get_codec("ccsds123", {"cascade": 16})


# --------------------------------------------------------------------------- golden


#: sha256 of the .hsic files (default parameters, bit depth 14) of the golden cube.
GOLDEN = {
    ("sample-adaptive", 0): "f782caac4ca1a24371c3d57fde2c32b108f881c80b66307e640de7934b20d35a",
    ("sample-adaptive", 2): "7c37f88777dd82dd67639ecc89536e4c96187ab6b4ffc77b0ae42ddae9778b65",
    ("arith", 0): "c1fcb2ea46d425075f9eb6479fe6e521c0d4fd48f2cb3e20fe483b65778d8ca9",
    ("arith", 2): "152c14ebfd93c75497e2c3e6ed8e658bd9ae604e7157f4746e19b45322547431",
}
#: sha256 of the same files in container version 1 (no check value): the coded bits are
#: unchanged since then.
GOLDEN_V1 = {
    ("sample-adaptive", 0): "2497b490f0b969cbc4e31ae6e47781dbd466eebd757a7439370323cad474f6dc",
    ("sample-adaptive", 2): "a9516cad84d42dd8ad857a1cbe307c04bc091c4467de07e12e7ece93d988b3e2",
    ("arith", 0): "3be605dbc2e5c8bcb4290e222b8e0ab6b32127152d69c3f656897552e70116c7",
    ("arith", 2): "015b2bfeeeb94139d79dfc5c34396fcf286ad5e289a6c88bfc48316d5358c54c",
}
GOLDEN_CUBE = "9a5b38f179329e7195934d8782741a1d2e05ebd7c11607f82e17df2bcaae9280"


@pytest.mark.parametrize(("coder", "delta"), sorted(GOLDEN))
def test_golden_bitstream(coder: str, delta: int) -> None:
    """Any change of the bitstream (predictor, coder, side info) must be deliberate; files
    of container version 1 still decode."""
    cube = smooth_cube((6, 10, 12), 14, seed=10, noise=0.01)
    assert hashlib.sha256(cube.tobytes()).hexdigest() == GOLDEN_CUBE  # the input itself
    data = get_codec("ccsds123", {"coder": coder}).encode(cube, delta, 14)
    assert hashlib.sha256(data).hexdigest() == GOLDEN[coder, delta]
    old = version1_file(data)
    assert hashlib.sha256(old).hexdigest() == GOLDEN_V1[coder, delta]
    header, decoded = decode_bytes(old)
    assert header.version == 1 and header.check is None
    assert np.array_equal(decoded, decode_bytes(data)[1])


# --------------------------------------------------------------------------- real data

#: Anchor rates of CCSDS-123 with the sample-adaptive coder on mid_64x64 (anchors.md).
MID_ANCHORS = {0: 5.848, 5: 2.559}


@pytest.fixture(scope="module")
def mid_crop() -> np.ndarray:
    cube = enmap_crop("mid_64x64")
    assert cube.shape == (202, 64, 64)
    return cube


@pytest.mark.parametrize("delta", sorted(MID_ANCHORS))
def test_enmap_anchor_rate(mid_crop: np.ndarray, delta: int) -> None:
    # the anchor table was measured with D = 16 (values below 2**14 stored as uint16)
    data = _roundtrip(mid_crop, delta, 16)
    rate = 8 * len(data) / mid_crop.size
    assert abs(rate / MID_ANCHORS[delta] - 1) < 0.01, rate


def test_enmap_arith_beats_sample_adaptive(mid_crop: np.ndarray) -> None:
    golomb_rate = 8 * len(get_codec("ccsds123").encode(mid_crop, 0, 16)) / mid_crop.size
    arith_rate = 8 * len(_roundtrip(mid_crop, 0, 16, coder="arith")) / mid_crop.size
    assert arith_rate < golomb_rate - 0.2, (arith_rate, golomb_rate)


def test_enmap_second_stage_lowers_the_rate(mid_crop: np.ndarray) -> None:
    params = {"coder": "arith", "P": 7, "nu_max": 6}
    for delta in (0, 5):
        plain = len(_roundtrip(mid_crop, delta, 16, **params))
        second = len(_roundtrip(mid_crop, delta, 16, **params, cascade=5))
        assert second < 0.995 * plain, (delta, second, plain)
