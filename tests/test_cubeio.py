"""Cube reading and writing: every format, its round trip and its error cases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ENMAP_DIR

from hsicomp.cubeio import cube_files, read_cube, write_cube
from hsicomp.errors import HsicompError

SHAPE = (4, 5, 7)


@pytest.fixture
def cube() -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 65536, SHAPE, dtype=np.uint16)
    data[0, 0, 0], data[-1, -1, -1] = 0, 65535
    return data


def envi_header(bands: int, rows: int, cols: int, dtype: int, interleave: str,
                order: int = 0, offset: int = 0) -> str:
    return (f"ENVI\ndescription = {{test\n  cube}}\nsamples = {cols}\nlines = {rows}\n"
            f"bands = {bands}\nheader offset = {offset}\ndata type = {dtype}\n"
            f"interleave = {interleave}\nbyte order = {order}\n"
            f"wavelength = {{\n 1, 2,\n 3}}\n")


@pytest.mark.parametrize("name", ["c.bsq", "c.raw", "c.npy", "c.tif", "c.TIFF", "c.hdr",
                                  "c.h5", "c.hdf5"])
def test_round_trip(name: str, cube: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / name
    write_cube(path, cube)
    out = read_cube(path, dims=SHAPE)
    assert out.dtype == np.uint16 and out.shape == SHAPE
    np.testing.assert_array_equal(out, cube)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_envi_convention(cube: np.ndarray, tmp_path: Path) -> None:
    write_cube(tmp_path / "c.hdr", cube)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.hdr", "c.img"]
    assert (tmp_path / "c.img").read_bytes() == cube.astype("<u2").tobytes()
    text = (tmp_path / "c.hdr").read_text()
    assert "data type = 12" in text and "interleave = bsq" in text


@pytest.mark.parametrize("interleave, order", [("bsq", 0), ("bil", 0), ("bip", 1),
                                               ("bil", 1)])
def test_envi_interleaves(interleave: str, order: int, cube: np.ndarray,
                          tmp_path: Path) -> None:
    layout = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    dtype = "<u2" if order == 0 else ">u2"
    header = tmp_path / "scene.hdr"
    header.write_text(envi_header(*SHAPE, 12, interleave, order, offset=3))
    data = b"abc" + cube.transpose(layout).astype(dtype).tobytes()
    (tmp_path / "scene").write_bytes(data)
    np.testing.assert_array_equal(read_cube(header), cube)


def test_envi_int16(tmp_path: Path) -> None:
    cube = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    (tmp_path / "s.hdr").write_text(envi_header(*SHAPE, 2, "bsq"))
    (tmp_path / "s.dat").write_bytes(cube.astype("<i2").tobytes())
    np.testing.assert_array_equal(read_cube(tmp_path / "s.hdr"), cube)
    (tmp_path / "s.dat").write_bytes((cube - 1).astype("<i2").tobytes())
    with pytest.raises(HsicompError, match="negative"):
        read_cube(tmp_path / "s.hdr")


@pytest.mark.parametrize("header, data_size, match", [
    ("NOT ENVI\n", 280, "not an ENVI header"),
    (envi_header(*SHAPE, 12, "bsq").replace("lines", "rows"), 280, "lacks 'lines'"),
    (envi_header(*SHAPE, 12, "bsq").replace("= 4", "= four"), 280, "bad ENVI 'bands'"),
    (envi_header(*SHAPE, 6, "bsq"), 280, "data type 6"),
    (envi_header(*SHAPE, 12, "bxx"), 280, "interleave"),
    (envi_header(*SHAPE, 12, "bsq"), 279, "does not match"),
    (envi_header(*SHAPE, 12, "bsq", order=2), 280, "byte order"),
])
def test_envi_errors(header: str, data_size: int, match: str, tmp_path: Path) -> None:
    (tmp_path / "s.hdr").write_text(header)
    (tmp_path / "s.img").write_bytes(bytes(data_size))
    with pytest.raises(HsicompError, match=match):
        read_cube(tmp_path / "s.hdr")


def test_envi_missing_data_file(tmp_path: Path) -> None:
    (tmp_path / "s.hdr").write_text(envi_header(*SHAPE, 12, "bsq"))
    with pytest.raises(HsicompError, match="no ENVI data file"):
        read_cube(tmp_path / "s.hdr")


def test_hdf5_dataset_choice(cube: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "c.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/only", data=cube)
        f.create_dataset("flat", data=np.zeros(3))
    np.testing.assert_array_equal(read_cube(path), cube)
    with h5py.File(path, "a") as f:
        f.create_dataset("other", data=cube)
    with pytest.raises(HsicompError, match="2 3-D datasets"):
        read_cube(path)
    np.testing.assert_array_equal(read_cube(path, dataset="other"), cube)
    with pytest.raises(HsicompError, match="no dataset 'missing'"):
        read_cube(path, dataset="missing")
    with pytest.raises(HsicompError, match="expected a 3-D cube"):
        read_cube(path, dataset="flat")


def test_integer_valued_float_and_wide_ints_accepted(tmp_path: Path) -> None:
    cube = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    for dtype in (np.float32, np.float64, np.int64, np.uint8):
        np.save(tmp_path / "c.npy", cube.astype(dtype))
        out = read_cube(tmp_path / "c.npy")
        assert out.dtype == np.uint16
        np.testing.assert_array_equal(out, cube)


@pytest.mark.parametrize("array, match", [
    (np.zeros((4, 5)), "3-D"),
    (np.zeros((2, 3, 4, 5)), "3-D"),
    (np.zeros((0, 3, 4)), "empty"),
    (np.full(SHAPE, 0.5), "non-integer"),
    (np.full(SHAPE, np.nan), "NaN"),
    (np.full(SHAPE, np.inf), "infinite"),
    (np.full(SHAPE, -1, dtype=np.int32), "negative"),
    (np.full(SHAPE, 65536, dtype=np.int32), "above 65535"),
    (np.ones(SHAPE, dtype=bool), "unsupported sample type"),
    (np.ones(SHAPE, dtype=np.complex64), "unsupported sample type"),
])
def test_bad_values_rejected(array: np.ndarray, match: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(HsicompError, match=match) as info:
        read_cube(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(HsicompError, match=match):
        write_cube(tmp_path / "out.npy", array)
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_float_tiff_with_nodata_rejected(tmp_path: Path) -> None:
    import rasterio

    data = np.full(SHAPE, 100.0, dtype=np.float32)
    data[1] = -32768
    path = tmp_path / "f.tif"
    with rasterio.open(path, "w", driver="GTiff", width=7, height=5, count=4,
                       dtype="float32") as dst:
        dst.write(data)
    with pytest.raises(HsicompError, match="negative"):
        read_cube(path)


def test_raw_errors(cube: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "c.bsq"
    write_cube(path, cube)
    with pytest.raises(HsicompError, match="needs its dimensions"):
        read_cube(path)
    with pytest.raises(HsicompError, match="does not match"):
        read_cube(path, dims=(4, 5, 8))


@pytest.mark.parametrize("name", ["c.npy", "c.tif", "c.h5", "c.bsq", "c.hdr"])
def test_missing_file(name: str, tmp_path: Path) -> None:
    with pytest.raises(HsicompError, match="file not found"):
        read_cube(tmp_path / name, dims=SHAPE)


@pytest.mark.parametrize("name", ["c.npy", "c.tif", "c.h5", "c.bsq", "c.hdr"])
def test_input_that_is_not_a_regular_file(name: str, tmp_path: Path) -> None:
    (tmp_path / name).mkdir()
    with pytest.raises(HsicompError, match=f"{name}: is a directory"):
        read_cube(tmp_path / name, dims=SHAPE)
    fifo = tmp_path / ("f" + Path(name).suffix)
    os.mkfifo(fifo)
    with pytest.raises(HsicompError, match="not a regular file"):
        read_cube(fifo, dims=SHAPE)


@pytest.mark.parametrize("name", ["c.npy", "c.tif", "c.h5", "c.bsq", "c.hdr"])
def test_output_that_is_not_a_regular_file_is_left_alone(name: str, cube: np.ndarray,
                                                         tmp_path: Path) -> None:
    suffix = Path(name).suffix
    (tmp_path / name).mkdir()
    fifo = tmp_path / ("f" + suffix)
    os.mkfifo(fifo)
    (tmp_path / "file").write_bytes(b"x")
    for target, message in ((tmp_path / name, "is a directory"),
                            (fifo, "not a regular file"),
                            (tmp_path / "file" / name, "file is not a directory")):
        with pytest.raises(HsicompError, match=message):
            write_cube(target, cube)
    assert (tmp_path / name).is_dir() and stat.S_ISFIFO(fifo.stat().st_mode)
    assert (tmp_path / "file").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, fifo.name, "file"])


def test_cube_files_name_the_envi_data_file(cube: np.ndarray, tmp_path: Path) -> None:
    header = tmp_path / "c.hdr"
    assert cube_files(header) == [header]
    assert cube_files(header, written=True) == [tmp_path / "c.img", header]
    write_cube(header, cube)
    assert cube_files(header) == [header, tmp_path / "c.img"]
    assert cube_files(tmp_path / "c.npy", written=True) == [tmp_path / "c.npy"]


@pytest.mark.parametrize("name", ["c.npy", "c.tif", "c.h5"])
def test_foreign_content(name: str, tmp_path: Path) -> None:
    (tmp_path / name).write_bytes(b"this is not a cube" * 10)
    with pytest.raises(HsicompError, match="not a readable"):
        read_cube(tmp_path / name)


def test_unknown_extension(cube: np.ndarray, tmp_path: Path) -> None:
    (tmp_path / "c.png").write_bytes(b"x")
    with pytest.raises(HsicompError, match="unknown cube format '.png'"):
        read_cube(tmp_path / "c.png")
    with pytest.raises(HsicompError, match="unknown cube format"):
        write_cube(tmp_path / "c.jpg", cube)
    assert not (tmp_path / "c.jpg").exists()


def test_real_enmap_tile_needs_preparation() -> None:
    tiles = sorted(ENMAP_DIR.glob("*.tif")) if ENMAP_DIR.is_dir() else []
    if not tiles:
        pytest.skip(f"no EnMAP tiles in {ENMAP_DIR}")
    # Float reflectance with -32768 nodata bands: refused rather than silently wrapped.
    with pytest.raises(HsicompError, match="negative"):
        read_cube(tiles[0])
