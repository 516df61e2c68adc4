"""Dataset preparation: integer conversion, real EnMAP tiles, mosaics, splits, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from helpers import ENMAP_DIR as ENMAP

from hsicomp.data.datasets import prepare, read_band_table, read_geotiff, to_uint
from hsicomp.errors import HsicompError
from hsicomp.io.bands import ENMAP_202, ENMAP_WATER_VAPOUR
from hsicomp.io.bsq import read_bsq, write_bsq
from hsicomp.io.manifest import read_manifest

needs_enmap = pytest.mark.skipif(not ENMAP.is_dir(), reason="../shared/data/enmap-potsdam absent")


def test_to_uint_counts_and_clips():
    data = np.array([[[-5, 0, 100], [20000, -32768, 16383]]], dtype=np.int16)
    conv = to_uint(data, bit_depth=14, nodata=-32768, source="x")
    assert conv.cube.dtype == np.uint16
    assert conv.cube.tolist() == [[[0, 0, 100], [16383, 0, 16383]]]
    assert (conv.clipped_low, conv.clipped_high, conv.nodata) == (1, 1, 1)


def test_to_uint_rejects_non_integer_floats():
    with pytest.raises(HsicompError, match="non-integer"):
        to_uint(np.array([[[1.5]]], dtype=np.float32), 14, None, "f.tif")


@needs_enmap
def test_enmap_tile_conversion_selects_bands_and_round_trips(tmp_path):
    import rasterio

    tif = ENMAP / "enmap_potsdam_tile_128_128.tif"
    data, nodata = read_geotiff([tif], "enmap202")
    assert data.shape == (202, 32, 32)
    conv = to_uint(data, 14, nodata, str(tif))
    # the nodata bands 129..134 are water-vapour bands and are dropped: nothing clipped
    assert set(range(129, 135)) <= set(ENMAP_WATER_VAPOUR)
    assert (conv.clipped_low, conv.clipped_high, conv.nodata) == (0, 0, 0)
    with rasterio.open(tif) as src:
        full = src.read()
    # band 126 of the cube is file band 141, the first one kept after the gap
    assert ENMAP_202[126] == 141
    np.testing.assert_array_equal(conv.cube[126], full[141].astype(np.uint16))
    # BSQ on disk: little-endian uint16, band-major; round trip back to the GeoTIFF values
    out = tmp_path / "tile.bsq"
    sha = write_bsq(out, conv.cube)
    raw = out.read_bytes()
    assert sha == hashlib.sha256(raw).hexdigest()
    assert len(raw) == 202 * 32 * 32 * 2
    assert int.from_bytes(raw[:2], "little") == int(full[0, 0, 0])
    second_band_first = 32 * 32 * 2
    assert int.from_bytes(raw[second_band_first:second_band_first + 2], "little") == full[1, 0, 0]
    back = read_bsq(out, 202, 32, 32)
    np.testing.assert_array_equal(back.astype(np.float32), full[list(ENMAP_202)])


@needs_enmap
def test_enmap_nodata_bands_are_counted_when_kept(tmp_path):
    tif = ENMAP / "enmap_potsdam_tile_96_96.tif"
    data, nodata = read_geotiff([tif], "125-135")
    conv = to_uint(data, 14, nodata, str(tif))
    assert conv.nodata == 6 * 32 * 32
    assert (conv.cube[4:10] == 0).all()


@needs_enmap
def test_folder_dataset_mosaics_by_georeference(tmp_path):
    tiles = [f"enmap_potsdam_tile_{x}_{y}.tif" for y in (64, 96, 128, 160) for x in (160, 192)]
    spec = {"kind": "geotiff_folder", "path": str(ENMAP), "bands": "enmap202", "bit_depth": 14,
            "mosaics": {"se_128x64": tiles, "one": ["enmap_potsdam_tile_96_96.tif"]},
            "splits": {"train": ["one"]}}
    records = prepare(spec, tmp_path / "ds", progress=False)
    by_id = {r.patch_id: r for r in records}
    se = by_id["se_128x64"]
    assert (se.split, se.shape) == ("test", (202, 128, 64))
    assert by_id["one"].split == "train" and by_id["one"].file == "train.h5"
    mosaic = read_bsq(tmp_path / "ds" / se.file, *se.shape)
    tile, _ = read_geotiff([ENMAP / "enmap_potsdam_tile_192_96.tif"], "enmap202")
    np.testing.assert_array_equal(mosaic[:, 32:64, 32:64], tile.astype(np.uint16))
    assert read_manifest(tmp_path / "ds" / "manifest.csv") == records
    # the band table: EnMAP's centre wavelengths of the 202 kept bands, from the band tags
    wavelengths = read_band_table(tmp_path / "ds")
    assert sorted(wavelengths) == list(range(202))
    assert wavelengths[0] == pytest.approx(418.24)
    assert max(wavelengths.values()) > 2400  # to the end of the SWIR detector
    steps = [wavelengths[i + 1] - wavelengths[i] for i in range(201)]
    assert sum(step < 0 for step in steps) == 1  # VNIR then SWIR, which overlap near 950 nm


def test_band_table_is_absent_without_wavelengths(tmp_path):
    spec = {"kind": "synthetic", "seed": 1, "bands": 4, "rows": 8, "cols": 8, "bit_depth": 12,
            "patches": {"train": 0, "val": 0, "test": 1}}
    prepare(spec, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds" / "bands.csv").exists()
    assert read_band_table(tmp_path / "ds") == {}


def test_synthetic_dataset_is_byte_identical_across_runs(tmp_path):
    spec = {"kind": "synthetic", "seed": 7, "bands": 12, "rows": 16, "cols": 8, "bit_depth": 14,
            "patches": {"train": 2, "val": 1, "test": 2}}

    def digest(folder: Path) -> dict[str, str]:
        return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    prepare(spec, tmp_path / "a", progress=False)
    prepare(spec, tmp_path / "b", progress=False)
    a, b = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert set(a) == {"manifest.csv", "train.h5", "val.h5", "test/synth-test-0000.bsq",
                      "test/synth-test-0001.bsq"}
    assert a == b
    records = read_manifest(tmp_path / "a" / "manifest.csv")
    assert [r.split for r in records] == ["train", "train", "val", "test", "test"]


def test_h5_patches_match_manifest_hash(tmp_path):
    import h5py

    from hsicomp.io.bsq import cube_sha256

    spec = {"kind": "synthetic", "seed": 3, "bands": 5, "rows": 6, "cols": 7, "bit_depth": 12,
            "patches": {"train": 2, "val": 0, "test": 1}}
    records = prepare(spec, tmp_path, progress=False)
    with h5py.File(tmp_path / "train.h5") as f:
        for rec in records[:2]:
            cube = f[f"patches/{rec.patch_id}"][()]
            assert cube.shape == rec.shape and cube.max() <= 4095
            assert cube_sha256(cube) == rec.sha256
    with h5py.File(tmp_path / "val.h5") as f:
        assert len(f["patches"]) == 0


def test_unknown_kind_and_missing_folder_are_clear_errors(tmp_path):
    with pytest.raises(HsicompError, match="unknown dataset kind"):
        prepare({"kind": "nope", "bit_depth": 14}, tmp_path)
    with pytest.raises(HsicompError, match="folder not found"):
        prepare({"kind": "geotiff_folder", "path": str(tmp_path / "missing"), "bit_depth": 14},
                tmp_path / "out")


def test_prepare_spec_must_be_a_json_object(tmp_path, capsys):
    from hsicomp.cli import main

    for spec, message in (("{", "--spec is not valid JSON"),
                          ("[1]", "--spec must be a JSON object")):
        assert main(["prepare", "--spec", spec, "--out", str(tmp_path / "ds")]) == 2
        assert message in capsys.readouterr().err
