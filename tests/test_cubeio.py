"""Cube reading and writing: every format, its round trip and its error cases."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import ENMAP_DIR

from hsicomp.errors import HsicompError
from hsicomp.io.cubeio import cube_files, read_cube, read_product, write_cube
from hsicomp.io.metadata import dump_metadata, load_metadata

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


# What a file says besides its samples: read_product keeps it, write_cube writes it back.


def carried(meta: dict) -> dict:
    """``meta`` as a decoder gets it: through the metadata block."""
    return load_metadata(dump_metadata(meta))


def test_plain_inputs_carry_no_metadata(cube: np.ndarray, tmp_path: Path) -> None:
    """uint16 cubes as write_cube writes them (raw, .npy, GeoTIFF, HDF5) have nothing to
    carry, so their .hsic files stay version 2."""
    for name in ("c.bsq", "c.npy", "c.tif", "c.h5"):
        write_cube(tmp_path / name, cube)
        product = read_product(tmp_path / name, dims=SHAPE)
        np.testing.assert_array_equal(product.cube, cube)
        assert product.metadata == {} and product.band_list is None, name
    assert dump_metadata({}) == b""


def write_geotiff(path: Path, data: np.ndarray, **extra) -> None:
    import rasterio
    from affine import Affine

    bands, rows, cols = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=bands,
                       dtype=data.dtype.name, crs="EPSG:32633",
                       transform=Affine(30.0, 0.0, 366015.0, 0.0, -30.0, 5806125.0),
                       **extra) as dst:
        dst.write(data)
        for b in range(bands):
            dst.set_band_description(b + 1, f"band {b + 1} ({400 + 10 * b} nm)")
            dst.update_tags(b + 1, wavelength=str(400 + 10 * b), fwhm="6.5")
        dst.update_tags(start_time="2022-07-24T10:45:26")
        dst.scales = (1e-4,) * bands


def geotiff_facts(path: Path) -> dict:
    import rasterio

    with rasterio.open(path) as src:
        return {"data": src.read(), "dtype": src.dtypes[0], "crs": src.crs,
                "transform": src.transform, "nodata": src.nodata,
                "descriptions": src.descriptions, "tags": src.tags(),
                "band_tags": [src.tags(b + 1) for b in range(src.count)],
                "scales": src.scales}


@pytest.mark.parametrize("dtype, nodata", [("int16", -9999), ("float32", float("nan")),
                                           ("uint16", 0)])
def test_geotiff_round_trip_keeps_its_metadata(dtype: str, nodata: float,
                                               tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(1, 3000, SHAPE).astype(dtype)
    data[2] = nodata  # a whole band of nodata
    data[0, 1, 2:5] = nodata
    write_geotiff(tmp_path / "in.tif", data, nodata=nodata)
    product = read_product(tmp_path / "in.tif")  # the file's own nodata value
    assert product.cube.dtype == np.uint16 and product.cube[2].max() == 0
    write_cube(tmp_path / "out.tif", product.cube, metadata=carried(product.metadata))
    before, after = geotiff_facts(tmp_path / "in.tif"), geotiff_facts(tmp_path / "out.tif")
    np.testing.assert_array_equal(after.pop("data"), before.pop("data"))
    if dtype == "float32":
        assert np.isnan(after.pop("nodata")) and np.isnan(before.pop("nodata"))
    assert after == before
    # other formats get the samples in the input's type, nodata put back
    write_cube(tmp_path / "out.npy", product.cube, metadata=carried(product.metadata))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), data)
    assert np.load(tmp_path / "out.npy").dtype == data.dtype


def test_geotiff_band_selection_keeps_the_bands_metadata(tmp_path: Path) -> None:
    data = np.arange(np.prod(SHAPE), dtype=np.uint16).reshape(SHAPE)
    write_geotiff(tmp_path / "in.tif", data)
    product = read_product(tmp_path / "in.tif", bands="1,3")
    assert product.band_list == [1, 3]
    write_cube(tmp_path / "out.tif", product.cube, metadata=carried(product.metadata))
    before, after = geotiff_facts(tmp_path / "in.tif"), geotiff_facts(tmp_path / "out.tif")
    np.testing.assert_array_equal(after["data"], data[[1, 3]])
    assert after["descriptions"] == tuple(before["descriptions"][b] for b in (1, 3))
    assert after["band_tags"] == [before["band_tags"][b] for b in (1, 3)]
    assert after["crs"] == before["crs"] and after["transform"] == before["transform"]
    with pytest.raises(HsicompError, match=r"band indices \[4\] out of range"):
        read_product(tmp_path / "in.tif", bands="0-4")


ENVI_EXTRA = ("sensor type = EnMAP\n"
              "map info = {UTM, 1.000, 1.000, 366015.000, 5806125.000, 3.0e+01, 3.0e+01, 33, "
              "North, WGS-84, units=Meters}\n"
              "wavelength units = Nanometers\n"
              "fwhm = {6.5, 6.6,\n 6.7, 6.8}\n"
              "band names = {b1, b2, b3, b4}\n"
              "data ignore value = -32768\n")


@pytest.mark.parametrize("interleave, order, dtype", [("bil", 0, "<i2"), ("bip", 1, ">i2"),
                                                      ("bsq", 0, "<u2"), ("bip", 0, "<f4")])
def test_envi_round_trip_keeps_interleave_and_header(interleave: str, order: int, dtype: str,
                                                     tmp_path: Path) -> None:
    layout = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    code = {"<i2": 2, ">i2": 2, "<u2": 12, "<f4": 4}[dtype]
    data = np.random.default_rng(2).integers(0, 4000, SHAPE).astype(dtype)
    if dtype != "<u2":
        data[1, :2] = -32768
    header = tmp_path / "scene.hdr"
    header.write_text(envi_header(*SHAPE, code, interleave, order) + ENVI_EXTRA)
    raw = data.transpose(layout).tobytes()
    (tmp_path / "scene.bil").write_bytes(raw)
    product = read_product(header)
    assert product.metadata["envi"]["interleave"] == interleave
    write_cube(tmp_path / "out.hdr", product.cube, metadata=carried(product.metadata))
    assert (tmp_path / "out.img").read_bytes() == raw  # same interleave, type, byte order
    text = (tmp_path / "out.hdr").read_text()
    assert f"interleave = {interleave}\n" in text and f"byte order = {order}\n" in text
    for line in ("wavelength = {\n 1, 2,\n 3}", "fwhm = {6.5, 6.6,\n 6.7, 6.8}",
                 "map info = {UTM, 1.000, 1.000, 366015.000", "sensor type = EnMAP",
                 "description = {test\n  cube}", f"data type = {code}\n"):
        assert line in text, line
    np.testing.assert_array_equal(read_cube(tmp_path / "out.hdr") if dtype == "<u2"
                                  else np.fromfile(tmp_path / "out.img", dtype).reshape(
                                      data.transpose(layout).shape).transpose(
                                      np.argsort(layout)), data)


def test_envi_band_selection_subsets_the_band_fields(tmp_path: Path) -> None:
    header = tmp_path / "scene.hdr"
    header.write_text(envi_header(*SHAPE, 12, "bsq").replace(
        "wavelength = {\n 1, 2,\n 3}", "wavelength = {\n 1, 2,\n 3, 4}") + ENVI_EXTRA)
    data = np.arange(np.prod(SHAPE), dtype="<u2").reshape(SHAPE)
    (tmp_path / "scene.img").write_bytes(data.tobytes())
    product = read_product(header, bands="0,2-3")
    write_cube(tmp_path / "out.hdr", product.cube, metadata=carried(product.metadata))
    text = (tmp_path / "out.hdr").read_text()
    assert "wavelength = {1, 3, 4}" in text and "fwhm = {6.5, 6.7, 6.8}" in text
    assert "band names = {b1, b3, b4}" in text and "bands = 3\n" in text
    np.testing.assert_array_equal(read_cube(tmp_path / "out.hdr"), data[[0, 2, 3]])


def test_hdf5_round_trip_keeps_name_and_attributes(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 4000, SHAPE).astype(np.int32)
    attrs = {"units": "W/m2/sr/nm", "gain": np.float64(0.01),
             "wavelengths": np.linspace(400.0, 430.0, 4), "count": np.int16(4),
             "raw": np.bytes_(b"\x00\x01sensor"),
             "names": np.array(["a", "b"], dtype=h5py.string_dtype())}
    with h5py.File(tmp_path / "in.h5", "w") as f:
        obj = f.create_dataset("scene/radiance", data=data)
        obj.attrs.update(attrs)
        f.attrs["mission"] = "EnMAP"
        f.attrs["orbit"] = np.uint32(8)
    product = read_product(tmp_path / "in.h5")
    write_cube(tmp_path / "out.h5", product.cube, metadata=carried(product.metadata))
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert list(f) == ["scene"] and list(f["scene"]) == ["radiance"]
        obj = f["scene/radiance"]
        assert obj.dtype == np.int32
        np.testing.assert_array_equal(obj[()], data)
        assert sorted(obj.attrs) == sorted(attrs)
        for key, value in attrs.items():
            got = obj.attrs[key]
            if isinstance(value, np.ndarray) and value.dtype.kind == "O":
                assert [v.decode() if isinstance(v, bytes) else v for v in got] == list(value)
            else:
                np.testing.assert_array_equal(got, value)
                assert np.asarray(got).dtype == np.asarray(value).dtype, key
        assert f.attrs["mission"] == "EnMAP" and f.attrs["orbit"].dtype == np.uint32


def test_npy_layout(tmp_path: Path) -> None:
    cube = np.random.default_rng(4).integers(0, 4000, (30, 8, 8), dtype=np.uint16)
    pixels_first = np.ascontiguousarray(cube.transpose(1, 2, 0))  # (rows, cols, bands)
    np.save(tmp_path / "rcb.npy", pixels_first)
    with pytest.raises(HsicompError, match=r"rcb.npy: shape \(8, 8, 30\) looks like "
                                           r"\(rows, cols, bands\); give --layout bip"):
        read_product(tmp_path / "rcb.npy")
    product = read_product(tmp_path / "rcb.npy", layout="bip")
    np.testing.assert_array_equal(product.cube, cube)
    assert product.metadata == {"format": "npy", "layout": "bip"}
    write_cube(tmp_path / "out.npy", product.cube, metadata=carried(product.metadata))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), pixels_first)
    bil = np.ascontiguousarray(cube.transpose(1, 0, 2))
    np.save(tmp_path / "rbc.npy", bil)
    np.testing.assert_array_equal(read_product(tmp_path / "rbc.npy", layout="bil").cube, cube)
    np.save(tmp_path / "brc.npy", cube)  # bands first: no question asked, nothing carried
    assert read_product(tmp_path / "brc.npy").metadata == {}
    write_cube(tmp_path / "c.tif", cube)
    with pytest.raises(HsicompError, match="applies to .npy and HDF5 inputs only"):
        read_product(tmp_path / "c.tif", layout="bip")


def test_nodata_that_cannot_be_coded(tmp_path: Path) -> None:
    """Negative nodata samples are coded as 0 and come back exactly; other negative values
    are refused; raw output (uint16 only) gets the coded samples."""
    data = np.random.default_rng(5).integers(0, 4000, SHAPE).astype(np.int16)
    data[:, 0, 0] = -32768
    np.save(tmp_path / "n.npy", data)
    with pytest.raises(HsicompError, match="minimum -32768.*give --nodata VALUE"):
        read_product(tmp_path / "n.npy")
    product = read_product(tmp_path / "n.npy", nodata=-32768)
    assert (product.cube[:, 0, 0] == 0).all()
    assert product.metadata["nodata"]["samples"] == SHAPE[0]
    meta = carried(product.metadata)
    write_cube(tmp_path / "out.npy", product.cube, metadata=meta)
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, data)
    write_cube(tmp_path / "out.bsq", product.cube, metadata=meta)
    np.testing.assert_array_equal(read_cube(tmp_path / "out.bsq", dims=SHAPE), product.cube)
    data[1, 1, 1] = -1
    np.save(tmp_path / "n.npy", data)
    with pytest.raises(HsicompError, match="negative sample values \\(minimum -1\\)$"):
        read_product(tmp_path / "n.npy", nodata=-32768)
