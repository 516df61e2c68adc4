"""Codec interface, anchor codecs, corrupt-file handling and the encode/decode/info CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ENMAP_DIR, damaged_copies

from hsicomp import cli
from hsicomp.cli.codec import register_cli
from hsicomp.codecs import available_codecs, codec_class, decode_bytes, get_codec
from hsicomp.errors import HsicompError
from hsicomp.io.bands import ENMAP_202
from hsicomp.io.container import MAX_METADATA_BYTES, Header, add_metadata, pack, unpack

ANCHORS = ["jpegls", "jpeg2000", "jpegxl", "raw"]
LOSSLESS_ONLY = ["jpeg2000", "jpegxl", "raw"]


def smooth_cube(shape: tuple[int, int, int] = (5, 17, 23), bit_depth: int = 14,
                seed: int = 0) -> np.ndarray:
    """A random but spatially and spectrally smooth uint16 cube."""
    rng = np.random.default_rng(seed)
    b, r, c = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    field = np.zeros(shape)
    for _ in range(4):
        fb, fr, fc = rng.uniform(0.05, 0.4, 3)
        field += rng.uniform(0.5, 1) * np.sin(fb * b + fr * r + fc * c + rng.uniform(0, 6))
    top = (1 << bit_depth) - 1
    field = (field - field.min()) / max(np.ptp(field), 1e-9) * 0.8 * top + rng.normal(0, 20, shape)
    return np.clip(np.rint(field), 0, top).astype(np.uint16)


def max_error(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return smooth_cube()


@pytest.fixture(scope="module")
def encoded(cube: np.ndarray) -> dict[str, bytes]:
    return {name: get_codec(name).encode(cube, 0, 14) for name in ANCHORS}


def test_registry_lists_anchors() -> None:
    assert set(ANCHORS) <= set(available_codecs())


def test_unknown_codec_lists_known_names() -> None:
    with pytest.raises(HsicompError, match="unknown codec 'nosuch'.*jpegls"):
        get_codec("nosuch")


@pytest.mark.parametrize("name", ANCHORS)
def test_lossless_round_trip(name: str, cube: np.ndarray, encoded: dict[str, bytes]) -> None:
    data = encoded[name]
    header, out = decode_bytes(data, source="mem")
    assert header.codec == name and header.shape == cube.shape
    assert header.bit_depth == 14 and header.delta == 0
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, cube)


@pytest.mark.parametrize("name", ANCHORS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 7), (2, 9, 1)])
def test_degenerate_shapes(name: str, shape: tuple[int, int, int]) -> None:
    cube = smooth_cube(shape, bit_depth=16, seed=3)
    cube.flat[0] = 65535
    _, out = decode_bytes(get_codec(name).encode(cube, 0, 16))
    np.testing.assert_array_equal(out, cube)


def test_compressors_beat_raw(encoded: dict[str, bytes]) -> None:
    for name in ("jpegls", "jpeg2000", "jpegxl"):
        assert len(encoded[name]) < len(encoded["raw"]), name


def test_raw_rate_is_16_bits_plus_header(cube: np.ndarray, encoded: dict[str, bytes]) -> None:
    overhead = len(encoded["raw"]) - 2 * cube.size
    assert 0 < overhead < 64


@pytest.mark.parametrize("delta", [1, 3, 10, 255])
def test_jpegls_near_lossless(cube: np.ndarray, encoded: dict[str, bytes], delta: int) -> None:
    data = get_codec("jpegls").encode(cube, delta, 14)
    header, out = decode_bytes(data)
    assert header.delta == delta
    assert 0 < max_error(out, cube) <= delta
    assert int(out.max()) < 1 << 14
    assert len(data) < len(encoded["jpegls"])


def test_near_lossless_stays_within_bit_depth(cube: np.ndarray) -> None:
    top = (1 << 14) - 1
    saturated = np.minimum(cube.astype(np.int64) * 2, top).astype(np.uint16)
    _, out = decode_bytes(get_codec("jpegls").encode(saturated, 255, 14))
    assert int(out.max()) <= top and max_error(out, saturated) <= 255


@pytest.mark.parametrize("name", LOSSLESS_ONLY)
def test_lossless_only_refuses_delta(name: str, cube: np.ndarray) -> None:
    codec = get_codec(name)
    assert codec.lossless_only and codec.supports(0) and not codec.supports(1)
    with pytest.raises(HsicompError, match="lossless only"):
        codec.encode(cube, 1, 14)


def test_jpegls_delta_limit(cube: np.ndarray) -> None:
    codec = get_codec("jpegls")
    assert codec.supports(255) and not codec.supports(256)
    with pytest.raises(HsicompError, match="does not support"):
        codec.encode(cube, 256, 14)


@pytest.mark.parametrize("bad, match", [
    (lambda c: c[0], "3-D"),
    (lambda c: c.astype(np.int32), "uint16"),
    (lambda c: c[:, :0], "empty"),
])
def test_encode_rejects_bad_cubes(cube: np.ndarray, bad, match: str) -> None:
    with pytest.raises(HsicompError, match=match):
        get_codec("jpegls").encode(bad(cube), 0, 14)


@pytest.mark.parametrize("delta, bit_depth, match", [
    (-1, 14, "non-negative"),
    (0, 0, "bit depth"),
    (0, 17, "bit depth"),
    (0, 12, "does not fit in 12 bits"),
])
def test_encode_rejects_bad_arguments(cube: np.ndarray, delta: int, bit_depth: int,
                                      match: str) -> None:
    with pytest.raises(HsicompError, match=match):
        get_codec("jpeg2000").encode(cube, delta, bit_depth)


@pytest.mark.parametrize("delta, bit_depth", [(1 << 14, 14), (2**32, 16), (2**63, 16), (2, 1)])
def test_delta_must_be_below_two_to_the_bit_depth(delta: int, bit_depth: int) -> None:
    """A larger delta would overflow the header's u32 field or the coders' int64 arithmetic,
    and bounds nothing more than ``2**bit_depth - 1`` does."""
    cube = np.ones((2, 3, 4), np.uint16)
    for name in ("ccsds123", "jpegls", "raw"):
        with pytest.raises(HsicompError, match=f"delta {delta} is too large for {bit_depth}-bit"):
            get_codec(name).encode(cube, delta, bit_depth)
    top = (1 << bit_depth) - 1
    header, out = decode_bytes(get_codec("ccsds123").encode(cube, top, bit_depth))
    assert header.delta == top and max_error(out, cube) <= top


@pytest.mark.parametrize("effort", [0, -1, 11, "12"])
def test_jpegxl_effort_outside_1_to_10_is_refused(effort: object) -> None:
    """imagecodecs clamps it silently to 1..10; the codec refuses it instead."""
    with pytest.raises(HsicompError, match="effort must be an integer in 1..10"):
        get_codec("jpegxl", {"effort": effort})


def test_jpegxl_effort_range_is_accepted(cube: np.ndarray) -> None:
    for effort in (1, 10):
        _, out = decode_bytes(get_codec("jpegxl", {"effort": effort}).encode(cube[:1], 0, 14))
        np.testing.assert_array_equal(out, cube[:1])


def test_negative_threads_are_refused_by_every_codec_that_takes_threads() -> None:
    names = [n for n in available_codecs() if "threads" in codec_class(n).defaults]
    assert {"linerwkv", "linerwkv-lms", "gdn", "gdn-gain", "gdn-ohm", "coolchic"} <= set(names)
    for name in names:
        with pytest.raises(HsicompError, match="threads must be >= 0"):
            get_codec(name, {"threads": "-1"})


def test_band_list_is_kept_and_checked(cube: np.ndarray) -> None:
    bands = [0, 2, 3, 7, 8]
    header, out = decode_bytes(get_codec("jpegls").encode(cube, 0, 14, band_list=bands))
    assert header.band_list == bands
    np.testing.assert_array_equal(out, cube)
    with pytest.raises(HsicompError, match="band list"):
        get_codec("jpegls").encode(cube, 0, 14, band_list=[0, 1])
    with pytest.raises(HsicompError, match="distinct"):
        get_codec("jpegls").encode(cube, 0, 14, band_list=[0, 1, 1, 2, 3])


def test_codec_parameters(cube: np.ndarray) -> None:
    codec = get_codec("jpegxl", {"effort": "3"})
    assert codec.params["effort"] == 3
    _, out = decode_bytes(codec.encode(cube, 0, 14))
    np.testing.assert_array_equal(out, cube)
    with pytest.raises(HsicompError, match="not a valid int"):
        get_codec("jpegxl", {"effort": "fast"})
    with pytest.raises(HsicompError, match="unknown parameter"):
        get_codec("jpegls", {"model": "x.pt"})


def test_file_size_is_the_rate(tmp_path: Path, cube: np.ndarray,
                               encoded: dict[str, bytes]) -> None:
    path = tmp_path / "c.hsic"
    path.write_bytes(encoded["jpegls"])
    header, _, _ = unpack(path.read_bytes())
    bps = 8 * path.stat().st_size / header.samples
    assert bps == 8 * len(encoded["jpegls"]) / cube.size
    assert 0 < bps < 16


# Corrupt input: every failure must be a one-line HsicompError naming the source.


def assert_corrupt(data: bytes, params: dict | None = None) -> None:
    with pytest.raises(HsicompError) as info:
        decode_bytes(data, params, source="bad.hsic")
    message = str(info.value)
    assert "\n" not in message and message.startswith("bad.hsic")


@pytest.mark.parametrize("name", ANCHORS)
def test_truncated_and_flipped(name: str, encoded: dict[str, bytes]) -> None:
    data = encoded[name]
    rng = np.random.default_rng(1)
    for damaged in damaged_copies(data, (0, 3, 10, len(data) // 2, len(data) - 1), 25, rng):
        assert_corrupt(damaged)


def test_foreign_bytes() -> None:
    assert_corrupt(b"")
    assert_corrupt(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert_corrupt(np.random.default_rng(2).bytes(500))


@pytest.mark.parametrize("name", ANCHORS)
def test_corrupt_payload_with_valid_checksum(name: str, encoded: dict[str, bytes]) -> None:
    header, side, payload = unpack(encoded[name])
    rng = np.random.default_rng(5)
    garbage = rng.bytes(len(payload))
    if side:  # keep the segment lengths consistent so the codestreams are decoded
        assert_corrupt(pack(header, side, garbage))
        assert_corrupt(pack(header, side[:-1], payload))
        assert_corrupt(pack(header, side + b"\x00", payload))
        assert_corrupt(pack(header, side, payload + b"\x00"))
    else:
        assert_corrupt(pack(header, b"", payload[:-2]))
        assert_corrupt(pack(header, b"\x01", payload))
    for field, value in (("rows", header.rows + 1), ("cols", header.cols - 1),
                         ("bands", header.bands + 1)):
        wrong = Header(**{**vars(header), field: value})
        assert_corrupt(pack(wrong, side, payload))


def test_values_above_bit_depth_are_corrupt(encoded: dict[str, bytes]) -> None:
    header, side, payload = unpack(encoded["jpegls"])
    header.bit_depth = 8
    assert_corrupt(pack(header, side, payload))


def test_wrong_codec_and_unknown_codec(encoded: dict[str, bytes]) -> None:
    with pytest.raises(HsicompError, match="written by codec 'jpegls'"):
        get_codec("jpeg2000").decode(encoded["jpegls"], source="x.hsic")
    header, side, payload = unpack(encoded["raw"])
    header.codec = "nosuch"
    with pytest.raises(HsicompError, match="unknown codec 'nosuch'"):
        decode_bytes(pack(header, side, payload))


def test_metadata_block_is_version_3_under_the_check(cube: np.ndarray,
                                                     encoded: dict[str, bytes]) -> None:
    """A metadata block makes a version-3 file that decodes like the version-2 one; no block
    leaves the bytes alone; the block is covered by the check value."""
    for name in ("jpegls", "raw"):
        plain = encoded[name]
        assert add_metadata(plain, b"") == plain
        data = add_metadata(plain, b"\x01user metadata")
        header, out = decode_bytes(data, source="m.hsic")
        assert header.version == 3 and header.metadata == b"\x01user metadata"
        np.testing.assert_array_equal(out, decode_bytes(plain)[1])
        assert len(data) == len(plain) + 1 + 14  # length varint and block
        forged_header, side, payload = unpack(data)
        forged_header.metadata = b"\x01user metadatA"  # same check value, other block
        with pytest.raises(HsicompError, match="do not match the file's check value"):
            decode_bytes(pack(forged_header, side, payload), source="m.hsic")
        with pytest.raises(HsicompError, match="version-2 files, not version 3"):
            add_metadata(data, b"\x01again")
    with pytest.raises(HsicompError, match="too large"):
        add_metadata(encoded["raw"], bytes(MAX_METADATA_BYTES + 1))
    # pack with the decoded data writes the same file as add_metadata
    header, side, payload = unpack(encoded["raw"])
    header.metadata = b"\x01m"
    assert pack(header, side, payload, [cube]) == add_metadata(encoded["raw"], b"\x01m")


# Real EnMAP data.


@pytest.fixture(scope="module")
def enmap_tile() -> np.ndarray:
    tiles = sorted(ENMAP_DIR.glob("*.tif")) if ENMAP_DIR.is_dir() else []
    if not tiles:
        pytest.skip(f"no EnMAP tiles in {ENMAP_DIR}")
    import rasterio

    with rasterio.open(tiles[0]) as src:
        data = src.read(indexes=[b + 1 for b in ENMAP_202])
    assert data.min() >= 0 and data.max() < 1 << 14
    return data.astype(np.uint16)


@pytest.mark.parametrize("name", ANCHORS)
def test_enmap_lossless(name: str, enmap_tile: np.ndarray, tmp_path: Path) -> None:
    data = get_codec(name).encode(enmap_tile, 0, 14, band_list=list(ENMAP_202))
    path = tmp_path / f"{name}.hsic"
    path.write_bytes(data)
    header, out = decode_bytes(path.read_bytes(), source=str(path))
    np.testing.assert_array_equal(out, enmap_tile)
    assert header.band_list == list(ENMAP_202)
    bps = 8 * path.stat().st_size / enmap_tile.size
    assert bps < 16 if name != "raw" else 16 < bps < 16.01


@pytest.mark.parametrize("delta", [1, 3])
def test_enmap_jpegls_near_lossless(delta: int, enmap_tile: np.ndarray) -> None:
    lossless = get_codec("jpegls").encode(enmap_tile, 0, 14)
    data = get_codec("jpegls").encode(enmap_tile, delta, 14)
    _, out = decode_bytes(data)
    assert max_error(out, enmap_tile) <= delta
    assert len(data) < len(lossless)


# Command line.


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hsicomp")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_cli_encode_decode_info(tmp_path: Path, cube: np.ndarray, capsys) -> None:
    src, hsic = tmp_path / "in.npy", tmp_path / "c.hsic"
    np.save(src, cube)
    args = parse(["encode", str(src), str(hsic), "--codec", "jpegls", "--delta", "2",
                  "--bit-depth", "14"])
    assert args.func(args) == 0
    assert "bits/sample" in capsys.readouterr().out
    for out_name in ("out.npy", "out.tif"):
        args = parse(["decode", str(hsic), str(tmp_path / out_name)])
        assert args.func(args) == 0
        line = capsys.readouterr().out.strip()
        assert "\n" not in line and "5x17x23 jpegls" in line
    from hsicomp.io.cubeio import read_cube

    for out_name in ("out.npy", "out.tif"):
        assert max_error(read_cube(tmp_path / out_name), cube) <= 2
    args = parse(["info", str(hsic)])
    assert args.func(args) == 0
    info = capsys.readouterr().out
    assert "codec: jpegls" in info and "delta: 2" in info and "bit_depth: 14" in info
    check = unpack(hsic.read_bytes())[0].check
    assert "format_version: 2" in info
    assert f"check: 0x{check:08x} (CRC-32 of the decoded samples" in info
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.hsic", "in.npy", "out.npy",
                                                           "out.tif"]


def test_cli_params_and_raw_input(tmp_path: Path, cube: np.ndarray) -> None:
    src, hsic = tmp_path / "in.bsq", tmp_path / "c.hsic"
    src.write_bytes(cube.astype("<u2").tobytes())
    args = parse(["encode", str(src), str(hsic), "--codec", "jpegxl", "--dims", "5,17,23",
                  "--param", "effort=2"])
    assert args.func(args) == 0
    header, out = decode_bytes(hsic.read_bytes())
    assert header.bit_depth == 16
    np.testing.assert_array_equal(out, cube)


@pytest.mark.parametrize("argv", [
    ["encode", "in.npy", "c.hsic", "--codec", "jpegls", "--dims", "5,17"],
    ["encode", "in.npy", "c.hsic", "--codec", "jpegls", "--param", "effort"],
    ["encode", "in.npy", "c.hsic", "--model", "m.pt", "--coder", "huffman"],
])
def test_cli_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2


def test_cli_encode_needs_a_codec_or_model() -> None:
    args = parse(["encode", "in.npy", "c.hsic"])
    with pytest.raises(HsicompError, match="give --codec NAME"):
        args.func(args)


@pytest.mark.parametrize("case", ["missing", "lossless_only", "corrupt", "out_format"])
def test_cli_user_errors_exit_2(case: str, tmp_path: Path, cube: np.ndarray, capsys,
                                monkeypatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("hsicomp.cli.codec",))
    src, hsic = tmp_path / "in.npy", tmp_path / "c.hsic"
    np.save(src, cube)
    hsic.write_bytes(b"HSIC" + bytes(40))
    argv = {
        "missing": ["decode", str(tmp_path / "none.hsic"), str(tmp_path / "o.npy")],
        "lossless_only": ["encode", str(src), str(tmp_path / "x.hsic"), "--codec", "jpegxl",
                          "--delta", "1"],
        "corrupt": ["decode", str(hsic), str(tmp_path / "o.npy")],
        "out_format": ["decode", str(hsic), str(tmp_path / "o.png")],
    }[case]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsicomp: error: ") and err.count("\n") == 1
    assert not (tmp_path / "o.npy").exists() and not (tmp_path / "x.hsic").exists()


def test_registry_does_not_import_torch() -> None:
    """Codecs without a network start without torch (it is imported only with a model)."""
    code = ("import sys; from hsicomp.codecs import available_codecs, get_codec; "
            "available_codecs(); get_codec('ccsds123', {}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_codecs_command_lists_every_codec_with_kind_and_parameters(capsys):
    assert cli.main(["codecs"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    names = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert names == available_codecs()
    text = dict(zip(names, (line for line in lines if line.startswith(" ")), strict=True))
    assert text["gdn-ohm"].strip().startswith("lossy") and "fraction=1.0" in text["gdn-ohm"]
    assert text["jpegls"].strip().startswith("lossless and near-lossless")
    assert text["jpeg2000"].strip().startswith("lossless;")
    assert "cascade=5" in text["linerwkv-lms"] and "``" not in out


@pytest.mark.parametrize("bands", ["enmap202", None])
def test_cli_codes_the_enmap_product(bands: str | None, tmp_path: Path, capsys) -> None:
    """The EnMAP L2A tile as downloaded (float32, -32768 nodata bands): coded with --nodata
    (and --bands), decoded to a GeoTIFF holding the product's values and metadata."""
    tiles = sorted(ENMAP_DIR.glob("*.tif")) if ENMAP_DIR.is_dir() else []
    if not tiles:
        pytest.skip(f"no EnMAP tiles in {ENMAP_DIR}")
    import rasterio

    hsic, out = tmp_path / "tile.hsic", tmp_path / "tile.tif"
    argv = ["encode", str(tiles[0]), str(hsic), "--codec", "ccsds123", "--nodata", "-32768"]
    assert cli.main(argv + (["--bands", bands] if bands else [])) == 0
    assert cli.main(["decode", str(hsic), str(out)]) == 0
    index = list(ENMAP_202) if bands else list(range(224))
    with rasterio.open(tiles[0]) as src, rasterio.open(out) as dst:
        original = src.read([b + 1 for b in index])
        assert dst.dtypes[0] == "float32" and dst.count == len(index)
        np.testing.assert_array_equal(dst.read(), original)
        assert (dst.crs, dst.transform, dst.nodata) == (src.crs, src.transform, src.nodata)
        assert dst.descriptions == tuple(src.descriptions[b] for b in index)
        assert [dst.tags(i + 1) for i in range(dst.count)] == [src.tags(b + 1) for b in index]
        assert dst.tags() == src.tags() and dst.scales == tuple(src.scales[b] for b in index)
    assert (original == -32768).sum() == (0 if bands else 6 * 32 * 32)
    capsys.readouterr()
    assert cli.main(["info", str(hsic)]) == 0
    info = capsys.readouterr().out
    samples = "no samples" if bands else "6144 samples, positions carried as a mask"
    for line in ("format_version: 3", "metadata_format: tiff", "sample_type: float32",
                 "crs: EPSG:32633", "transform: 30, 0, 366015, 0, -30, 5806125",
                 f"nodata: -32768 ({samples})", "band_tags: bbl, fwhm, wavelength",
                 "band_descriptions: " + str(len(index)) + " bands (first: 'band 1 (418.24"):
        assert line in info, line
    if bands:
        assert "band_list: 0-125,141-159,167-223" in info


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_cli_gives_an_envi_bil_file_back(tmp_path: Path, cube: np.ndarray, capsys) -> None:
    """An int16 BIL ENVI scene with a nodata value: decoding to ENVI gives the same data file
    and header fields; decoding to GeoTIFF the same samples."""
    data = cube.astype("<i2")
    data[:, 0, :3] = -32768
    header = tmp_path / "scene.hdr"
    header.write_text("ENVI\ndescription = {scene}\nsamples = 23\nlines = 17\nbands = 5\n"
                      "header offset = 0\nfile type = ENVI Standard\ndata type = 2\n"
                      "interleave = bil\nbyte order = 0\n"
                      "map info = {UTM, 1, 1, 366015, 5806125, 30, 30, 33, North, WGS-84}\n"
                      "wavelength = {418.24, 423.87, 429.29, 434.53, 439.60}\n"
                      "fwhm = {6.99, 6.96, 6.93, 6.90, 6.87}\ndata ignore value = -32768\n")
    raw = data.transpose(1, 0, 2).tobytes()
    (tmp_path / "scene.bil").write_bytes(raw)
    hsic = tmp_path / "scene.hsic"
    assert cli.main(["encode", str(header), str(hsic), "--codec", "jpegls",
                     "--bit-depth", "14"]) == 0
    assert cli.main(["decode", str(hsic), str(tmp_path / "out.hdr")]) == 0
    assert (tmp_path / "out.img").read_bytes() == raw
    text = (tmp_path / "out.hdr").read_text()
    original = header.read_text()
    assert text == original, text  # the same fields, in the same order
    assert cli.main(["decode", str(hsic), str(tmp_path / "out.tif")]) == 0
    import rasterio

    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.dtypes[0] == "int16" and src.crs is None  # samples only
        np.testing.assert_array_equal(src.read(), data)
    capsys.readouterr()
    assert cli.main(["info", str(hsic)]) == 0
    info = capsys.readouterr().out
    assert "envi_interleave: bil" in info and "envi[map info]: {UTM, 1, 1, 366015" in info
    assert "nodata: -32768 (15 samples, positions carried as a mask)" in info
