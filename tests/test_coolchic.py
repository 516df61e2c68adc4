"""The coolchic codec: integer tables, fixed-point ARM, bitstream and rate-distortion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ENMAP_DIR

from hsicomp.codecs import available_codecs, codec_class, get_codec
from hsicomp.entropy import arm as carm
from hsicomp.entropy.laplace_tables import (
    LATENT_MAX,
    LOG2_SCALE_MIN,
    NMU,
    NSCALE,
    PRECISION,
    geometric_cdf,
    integer_freqs,
    latent_cdfs,
)
from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import compare
from hsicomp.io.container import FLAG_LOSSY, pack, unpack
from hsicomp.models.coolchic import CoolChic, CoolChicConfig, decoder_macs, quantize

torch.set_num_threads(1)
SHAPE = (8, 16, 16)
BIT_DEPTH = 12
FAST = {"iterations": 120, "lr": 0.03, "grids": 3, "channels": 2, "synth_hidden": 8, "threads": 1}


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return structured_cube(SHAPE[0], SHAPE[1], BIT_DEPTH)


@pytest.fixture(scope="module")
def coded(cube) -> tuple[object, bytes]:
    codec = get_codec("coolchic", FAST)
    return codec, codec.encode(cube, 0, BIT_DEPTH)


def structured_cube(bands: int, size: int, bit_depth: int) -> np.ndarray:
    """Two smooth endmember spectra mixed by smooth abundance maps, plus mild noise."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + 0.3 * yy)) * np.cos(3 * yy)
    wl = np.linspace(0, 1, bands)[:, None, None]
    x = a * (0.3 + 0.5 * wl) + (1 - a) * (0.7 - 0.4 * wl ** 2)
    x = x + 0.01 * rng.normal(size=x.shape)
    top = (1 << bit_depth) - 1
    return np.clip(np.rint(x * 0.9 * top), 0, top).astype(np.uint16)


# --------------------------------------------------------------------------- tables


def test_integer_freqs_are_exact() -> None:
    # shares 5/4, 5/4, 10/4 of the 5 free units: floors 1, 1, 2, the unit left goes to the
    # largest remainder (the third entry)
    assert integer_freqs(np.array([[1, 1, 2]]), 8).tolist() == [[2, 2, 4]]
    assert integer_freqs(np.array([[0, 0, 0]]), 8).tolist() == [[3, 3, 2]]
    with pytest.raises(ValueError):
        integer_freqs(np.array([[1] * 9]), 8)


def test_latent_tables_follow_the_laplace_law() -> None:
    cdf = latent_cdfs()
    assert cdf.shape == (NSCALE * NMU, 4 * LATENT_MAX + 2)
    freq = np.diff(cdf, axis=1)
    assert (cdf[:, 0] == 0).all() and (cdf[:, -1] == 1 << PRECISION).all() and freq.min() >= 1
    d = np.arange(-2 * LATENT_MAX, 2 * LATENT_MAX + 1)
    for s, m in ((0, 0), (20, 7), (NSCALE - 1, NMU - 1)):
        b = 2.0 ** (LOG2_SCALE_MIN + s / 8)
        f = (m + 0.5) / NMU

        def laplace_cdf(t, b=b):
            e = 0.5 * np.exp(-np.abs(t) / b)
            return np.where(t < 0, e, 1 - e)

        p = laplace_cdf(d + 0.5 - f) - laplace_cdf(d - 0.5 - f)
        np.testing.assert_allclose(freq[s * NMU + m] / 2.0 ** PRECISION, p / p.sum(), atol=2e-5)
    g = np.diff(geometric_cdf(20, 50))
    assert g.size == 101 and g.sum() == 1 << PRECISION and g[50] == g.max()
    np.testing.assert_array_equal(g, g[::-1])  # symmetric


# --------------------------------------------------------------------------- integer ARM


def _reference_arm(grid: np.ndarray, arm: carm.IntegerArm, offsets: np.ndarray
                   ) -> list[tuple[int, int]]:
    """Table index and symbol of every latent, with Python integers (the documented rule)."""
    frac = carm.FRAC_BITS
    out = []
    c_n, h, w = grid.shape

    def value(c: int, y: int, x: int) -> int:
        inside = 0 <= c < c_n and 0 <= y < h and 0 <= x < w
        return int(grid[c, y, x]) if inside else 0

    for c in range(c_n):
        for y in range(h):
            for x in range(w):
                a = [value(c + dc, y + dy, x + dx) << frac for dc, dy, dx in offsets.tolist()]
                for layer in range(3):
                    wq, bq = arm.w[layer].tolist(), arm.b[layer].tolist()
                    kw, bs = int(arm.shifts[2 * layer]), int(arm.shifts[2 * layer + 1])
                    a = [(sum(wi * ai for wi, ai in zip(row, a, strict=True)) + (bi << bs)) >> kw
                         for row, bi in zip(wq, bq, strict=True)]
                    if layer < 2:
                        a = [max(v, 0) for v in a]
                lim = LATENT_MAX << frac
                mu = min(max(a[0], -lim), lim)
                si = min(max((a[1] - (LOG2_SCALE_MIN << frac) + (1 << (frac - 4))) >> (frac - 3),
                             0), NSCALE - 1)
                fi = (mu % (1 << frac)) >> (frac - 4)
                out.append((si * NMU + fi, int(grid[c, y, x]) - (mu >> frac) + 2 * LATENT_MAX))
    return out


def test_integer_arm_kernels_match_the_reference_and_round_trip() -> None:
    rng = np.random.default_rng(0)
    offsets = carm.context_offsets(6, 1)
    assert offsets.shape == (7, 3) and (offsets[:6, 0] == 0).all()
    assert all(dy < 0 or dx < 0 for _, dy, dx in offsets[:6].tolist())
    layers = [(rng.integers(-300, 300, (5, 7)), 8, rng.integers(-900, 900, 5), 9),
              (rng.integers(-300, 300, (5, 5)), 7, rng.integers(-900, 900, 5), 6),
              (rng.integers(-300, 300, (2, 5)), 9, rng.integers(-900, 900, 2), 10)]
    arm = carm.IntegerArm(layers)
    grid = np.clip(rng.laplace(0, 4, (2, 5, 9)).round(), -LATENT_MAX, LATENT_MAX).astype(np.int64)
    grid[0, 0, 0] = LATENT_MAX
    grid[1, 4, 8] = -LATENT_MAX
    cdf = latent_cdfs()
    ivals, tables = carm.grid_intervals(grid, arm, offsets, cdf)
    ref = _reference_arm(grid, arm, offsets)
    assert tables.tolist() == [t for t, _ in ref]
    assert ivals[0].tolist() == [int(cdf[t, s]) for t, s in ref]
    assert len(set(tables.tolist())) > 5  # the weights do vary the tables
    dec = carm.RangeDecoder(carm.encode_intervals(ivals))
    back, dtables = dec.grid(grid.shape, arm, offsets, cdf)
    assert dec.finished()
    np.testing.assert_array_equal(back, grid)
    np.testing.assert_array_equal(dtables, tables)
    with pytest.raises(ValueError):
        carm.grid_intervals(grid * 2, arm, offsets, cdf)


# --------------------------------------------------------------------------- codec


def test_registered_and_described(coded) -> None:
    codec, data = coded
    assert "coolchic" in available_codecs()
    header, side, _ = unpack(data)
    assert header.lossy and header.flags == FLAG_LOSSY and header.delta == 0
    fields = dict(codec_class("coolchic").describe_side_info(side))
    assert fields["grids"] == "3" and fields["channels"] == "2" and fields["synth_hidden"] == "8"
    assert codec_class("coolchic").describe_side_info(b"\x07") == [("side_info", "corrupt")]


def test_decoder_agrees_with_the_encoder(coded, cube) -> None:
    codec, data = coded
    decoded = codec.decode(data)
    assert decoded.dtype == np.uint16 and decoded.shape == SHAPE
    np.testing.assert_array_equal(decoded, codec.last_reconstruction)
    np.testing.assert_array_equal(get_codec("coolchic").decode(data), decoded)
    m = compare(cube, decoded, 4095.0)
    assert m["max_abs_error"] > 0 and m["psnr"] > 30


def test_decoded_table_indices_are_the_encoders(coded) -> None:
    codec, data = coded
    header, side, payload = unpack(data)
    qm, _, _, tables, basis = codec.decode_model(header, side, payload, "x")
    assert basis is None
    np.testing.assert_array_equal(tables, codec.last_stats["latent_tables"])
    assert sum(v.size for v in qm.latents) == tables.size


def test_rate_is_the_file_and_close_to_the_ideal_code_length(coded) -> None:
    codec, data = coded
    header, side, payload = unpack(data)
    stats = codec.last_stats
    assert len(pack(header, side, payload)) == len(data)
    assert (len(side), len(payload)) == (stats["side_bytes"], stats["payload_bytes"])
    ideal = stats["weight_bits"] + stats["latent_bits"]
    assert ideal <= 8 * len(payload) <= ideal + 96
    assert stats["train_loss"] > 0 and stats["macs_per_sample"]["total"] > 0


def test_same_seed_same_bytes(cube, coded) -> None:
    _, data = coded
    assert get_codec("coolchic", FAST).encode(cube, 0, BIT_DEPTH) == data
    assert get_codec("coolchic", {**FAST, "seed": 1}).encode(cube, 0, BIT_DEPTH) != data


@pytest.mark.parametrize("case", ["truncated", "flipped", "extra_word", "short_payload",
                                  "side_version", "side_config", "side_extra"])
def test_corrupt_input_is_a_one_line_error(coded, case) -> None:
    codec, data = coded
    header, side, payload = unpack(data)
    if case == "truncated":
        bad = data[:-7]
    elif case == "flipped":
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0x10
        bad = bytes(bad)
    elif case == "extra_word":
        bad = pack(header, side, payload + b"\x12\x34\x56\x78")
    elif case == "short_payload":
        bad = pack(header, side, payload[:len(payload) // 2])
    elif case == "side_version":
        bad = pack(header, b"\x09" + side[1:], payload)
    elif case == "side_config":
        bad = pack(header, side[:9] + b"\x00" + side[10:], payload)  # grids = 0
    else:
        bad = pack(header, side + b"\x01", payload)
    with pytest.raises(HsicompError) as err:
        codec.decode(bad, "bad.hsic")
    assert "\n" not in str(err.value) and str(err.value).strip()


def test_wrong_delta_and_bad_params(cube) -> None:
    codec = get_codec("coolchic", FAST)
    assert codec.supports(0) and not codec.supports(1)
    with pytest.raises(HsicompError, match="lossy"):
        codec.encode(cube, 2, BIT_DEPTH)
    for params in ({"preset": "huge"}, {"grids": 40}, {"lam": -1.0}, {"lam": "abc"},
                   {"arm_hidden": 500}, {"wrong": 1}, {"context": 30}):
        with pytest.raises(HsicompError):
            get_codec("coolchic", params)


def test_learning_rate_is_bounded() -> None:
    for lr in ("1000", "1e308", "inf", "nan", "0", "-0.1", "1.5"):
        with pytest.raises(HsicompError, match=r"lr must be in \(0, 1\]"):
            get_codec("coolchic", {**FAST, "lr": lr})
    assert get_codec("coolchic", {**FAST, "lr": "1"}).params["lr"] == 1.0


@pytest.mark.parametrize("damage, match", [
    ("huge_synthesis", "network tensor 6 is not finite or too large"),
    ("nan_arm", "network tensor 0 is not finite or too large"),
    ("nan_latents", "latents are not finite"),
])
def test_diverged_fit_is_a_one_line_error(damage: str, match: str) -> None:
    """A model whose weights blew up (as a fit with a huge lr leaves them) is refused."""
    config = CoolChicConfig(grids=2, channels=1, context=4, channel_context=0, arm_hidden=3,
                            synth_hidden=5, synth_layers=1)
    model = CoolChic(config, 2, 4, 4)
    with torch.no_grad():
        if damage == "huge_synthesis":
            model.synth[0].weight.fill_(1e9)
        elif damage == "nan_arm":
            model.arm[0].weight[0, 0] = float("nan")
        else:
            model.latents[0][0, 0, 0] = float("nan")
    with pytest.raises(HsicompError, match=f"fit diverged .*{match}") as err:
        quantize(model, torch.zeros(2, 4, 4), 0.01)
    assert "\n" not in str(err.value) and "smaller lr" in str(err.value)


def test_decoder_macs_count_every_part() -> None:
    config = CoolChicConfig(grids=2, channels=1, context=4, channel_context=0, arm_hidden=3,
                            synth_hidden=5, synth_layers=1)
    macs = decoder_macs(config, bands=10, rows=4, cols=4)
    samples = 10 * 16
    latents = 16 + 4
    assert macs["arm"] == pytest.approx(latents * (4 * 3 + 3 * 3 + 2 * 3) / samples)
    assert macs["upsampling"] == pytest.approx(4 * 16 / samples)
    assert macs["synthesis"] == pytest.approx(16 * (2 * 5 + 5 * 10) / samples)
    assert macs["total"] == pytest.approx(macs["arm"] + macs["upsampling"] + macs["synthesis"])


@pytest.mark.skipif(not ENMAP_DIR.is_dir(), reason="../shared/data/enmap-potsdam absent")
def test_real_enmap_crop_round_trips() -> None:
    from hsicomp.data.datasets import read_geotiff, to_uint

    tif = ENMAP_DIR / "enmap_potsdam_tile_128_128.tif"
    if not tif.is_file():
        pytest.skip(f"{tif} absent")
    data, nodata = read_geotiff([tif], "enmap202")
    cube = np.ascontiguousarray(to_uint(data, 14, nodata, str(tif)).cube[::8, :24, :24])
    codec = get_codec("coolchic", {**FAST, "iterations": 200, "lam": 0.01})
    encoded = codec.encode(cube, 0, 14)
    decoded = codec.decode(encoded)
    np.testing.assert_array_equal(decoded, codec.last_reconstruction)
    assert compare(cube, decoded, 16383.0)["psnr"] > 30  # 35.9 dB here: a wide margin
    assert 8 * len(encoded) / cube.size < 4.0


# --------------------------------------------------------------------------- spectral basis

BASIS = {**FAST, "basis": 3}


@pytest.fixture(scope="module")
def coded_basis(cube) -> tuple[object, bytes]:
    codec = get_codec("coolchic", BASIS)
    return codec, codec.encode(cube, 0, BIT_DEPTH)


def test_basis_round_trips_and_is_deterministic(coded_basis, cube) -> None:
    codec, data = coded_basis
    decoded = get_codec("coolchic").decode(data)
    np.testing.assert_array_equal(decoded, codec.last_reconstruction)
    assert compare(cube, decoded, 4095.0)["psnr"] > 30
    assert get_codec("coolchic", BASIS).encode(cube, 0, BIT_DEPTH) == data
    header, side, payload = unpack(data)
    qm, _, _, _, basis = codec.decode_model(header, side, payload, "x")
    assert qm.bands == 3 and basis.matrix.shape == (SHAPE[0], 3)


def test_basis_side_info_is_counted(coded_basis) -> None:
    codec, data = coded_basis
    header, side, payload = unpack(data)
    stats = codec.last_stats
    assert side[0] == 2 and (len(side), len(payload)) == (stats["side_bytes"],
                                                          stats["payload_bytes"])
    assert 0 < stats["basis_bytes"] < len(side)
    fields = dict(codec_class("coolchic").describe_side_info(side))
    assert fields["basis"] == "3" and int(fields["basis_bytes"]) == stats["basis_bytes"]
    macs = stats["macs_per_sample"]
    assert macs["basis"] == 3.0 and macs["total"] == pytest.approx(
        macs["arm"] + macs["upsampling"] + macs["synthesis"] + 3.0)


@pytest.mark.parametrize("case", ["no_streams", "matrix_byte", "basis_count"])
def test_corrupt_basis_is_a_one_line_error(coded_basis, case) -> None:
    codec, data = coded_basis
    header, side, payload = unpack(data)
    if case == "no_streams":
        bad_side = side[:5] + b"\x00\x00" + side[5:]
    elif case == "matrix_byte":
        bad_side = bytearray(side)
        bad_side[side[5] + 12] ^= 0x40
        bad_side = bytes(bad_side)
    else:
        config = bytes([3, 2, 8, 1, 12, 8, 2])  # the FAST architecture, then K = 3
        assert side.count(config + b"\x03") == 1
        bad_side = side.replace(config + b"\x03", config + b"\x63")  # K = 99 > 8 bands
    with pytest.raises(HsicompError) as err:
        codec.decode(pack(header, bad_side, payload), "bad.hsic")
    assert "\n" not in str(err.value) and str(err.value).strip()


def test_basis_zero_is_the_default_layout(coded, cube) -> None:
    _, data = coded
    assert get_codec("coolchic", {**FAST, "basis": 0}).encode(cube, 0, BIT_DEPTH) == data
    assert unpack(data)[1][0] == 1
    for bad in (-1, 65):
        with pytest.raises(HsicompError, match="basis"):
            get_codec("coolchic", {**FAST, "basis": bad})
    with pytest.raises(HsicompError, match="exceeds"):
        get_codec("coolchic", {**FAST, "basis": 9}).encode(cube, 0, BIT_DEPTH)
