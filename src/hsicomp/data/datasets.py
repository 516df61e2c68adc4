"""Dataset preparation: every source becomes BSQ test patches, HDF5 training splits and a manifest.

Sources (the ``kind`` of a dataset in the workflow config):

- ``synthetic``: the built-in deterministic generator (:mod:`hsicomp.data.synthetic`).
- ``hyspecnet``: an unpacked HySpecNet-11k copy; patches listed by the official split CSVs.
- ``geotiff_folder``: any folder of GeoTIFF cubes, optionally mosaicked by georeference.

Output folder layout::

    manifest.csv        one row per patch (see :class:`hsicomp.io.manifest.PatchRecord`)
    test/<patch>.bsq    test patches, uint16 little-endian, (band, row, col)
    train.h5, val.h5    training/validation patches as datasets ``patches/<patch>``
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.bands import resolve_band_list
from hsicomp.io.bsq import cube_sha256, write_bsq
from hsicomp.io.manifest import PatchRecord, write_manifest
from hsicomp.io.metadata import nodata_mask as nodata_samples
from hsicomp.io.table import read_table, write_table
from hsicomp.progress import progress_bar

SPLITS = ("train", "val", "test")
H5_SPLITS = ("train", "val")


@dataclass
class Conversion:
    """A patch converted to unsigned integers, with what the conversion changed."""

    cube: np.ndarray
    clipped_low: int
    clipped_high: int
    nodata: int
    #: Centre wavelength of every band in nm, when the source file says (read for a dataset's
    #: first patch only: the band table describes the whole dataset).
    wavelengths: tuple[float, ...] | None = None


#: Per-band table a prepared dataset holds when its source files give wavelengths.
BANDS_FILE = "bands.csv"
_BAND_COLUMNS = ("band", "wavelength_nm")
_NM_PER_UNIT = {"nanometers": 1.0, "nanometer": 1.0, "nm": 1.0, "micrometers": 1000.0,
                "micrometer": 1000.0, "um": 1000.0, "microns": 1000.0}


def geotiff_wavelengths(path: Path, bands: str | list | None) -> tuple[float, ...] | None:
    """Centre wavelengths (nm) of the selected bands from a GeoTIFF's band tags (ENVI-style
    ``wavelength`` and ``wavelength_units``, as EnMAP products carry them), else None."""
    import rasterio

    with rasterio.open(path) as src:
        out = []
        for b in resolve_band_list(bands, src.count):
            tags = {k.lower(): v for k, v in src.tags(b + 1).items()}
            scale = _NM_PER_UNIT.get(tags.get("wavelength_units", "nanometers").lower())
            try:
                value = float(tags["wavelength"])
            except (KeyError, ValueError):
                return None
            if scale is None or not value > 0:
                return None
            out.append(value * scale)
    return tuple(out)


def read_band_table(folder: Path) -> dict[int, float]:
    """Band index -> wavelength (nm) of a prepared dataset; empty when it has none."""
    path = Path(folder) / BANDS_FILE
    if not path.exists():
        return {}
    rows = read_table(path, _BAND_COLUMNS, what="band table")
    try:
        return {int(r["band"]): float(r["wavelength_nm"]) for r in rows}
    except ValueError:
        raise HsicompError(f"{path}: not a band table (band, wavelength_nm)") from None


def to_uint(data: np.ndarray, bit_depth: int, nodata: float | None, source: str) -> Conversion:
    """Convert a (bands, rows, cols) array of integer values to uint16 within ``bit_depth``.

    Nodata samples become 0, negative values are clipped to 0 and values above
    ``2**bit_depth - 1`` are clipped to it; each case is counted. Float input must hold
    integers (as EnMAP L2A GeoTIFFs do); NaN counts as nodata.
    """
    if not 1 <= bit_depth <= 16:
        raise HsicompError(f"{source}: bit depth {bit_depth} not in 1..16")
    top = (1 << bit_depth) - 1
    if np.issubdtype(data.dtype, np.floating):
        nodata_mask = np.isnan(data) | nodata_samples(data, nodata)
        valid = data[~nodata_mask]
        if valid.size and not np.array_equal(valid, np.round(valid)):
            raise HsicompError(f"{source}: float samples hold non-integer values")
        values = np.where(nodata_mask, 0, data).astype(np.int64)
    elif np.issubdtype(data.dtype, np.integer):
        nodata_mask = nodata_samples(data, nodata)
        values = data.astype(np.int64)
        values[nodata_mask] = 0
    else:
        raise HsicompError(f"{source}: unsupported sample type {data.dtype}")
    low = (values < 0) & ~nodata_mask
    high = values > top
    cube = np.clip(values, 0, top).astype(np.uint16)
    return Conversion(cube, int(low.sum()), int(high.sum()), int(nodata_mask.sum()))


def read_geotiff(paths: list[Path], bands: str | list | None) -> tuple[np.ndarray, float | None]:
    """Read the selected bands of one GeoTIFF, or a georeferenced mosaic of several.

    Returns the (bands, rows, cols) array in the file's sample type and its nodata value.
    Tiles of a mosaic must share band count, sample type and pixel grid; pixels no tile
    covers become nodata.
    """
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.merge import merge

    for p in paths:
        if not Path(p).is_file():
            raise HsicompError(f"{p}: file not found")
    try:
        with rasterio.open(paths[0]) as src:
            n_bands, nodata, dtype = src.count, src.nodata, src.dtypes[0]
        band_idx = resolve_band_list(bands, n_bands)
        indexes = [b + 1 for b in band_idx]
        if len(paths) == 1:
            with rasterio.open(paths[0]) as src:
                return src.read(indexes), nodata
        for p in paths[1:]:
            with rasterio.open(p) as src:
                if (src.count, src.dtypes[0]) != (n_bands, dtype):
                    raise HsicompError(f"{p}: {src.count} bands of {src.dtypes[0]} do not match "
                                       f"{paths[0]} ({n_bands} bands of {dtype})")
        fill = nodata if nodata is not None else 0
        mosaic, _ = merge([str(p) for p in paths], indexes=indexes, nodata=fill)
        return mosaic, fill
    except RasterioIOError as exc:
        raise HsicompError(f"{paths[0]}: cannot read GeoTIFF ({exc})") from None


class PatchWriter:
    """Writes converted patches into a dataset folder and collects manifest records."""

    def __init__(self, out_dir: Path, h5_compression: str | None = "lzf") -> None:
        self.out_dir = out_dir
        self.records: list[PatchRecord] = []
        self.h5_compression = h5_compression
        self._h5: dict[str, tuple[object, Path]] = {}
        self.wavelengths: tuple[float, ...] | None = None
        self._tmp_dir = out_dir / ".preparing"
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        (self._tmp_dir / "test").mkdir(parents=True)

    def add(self, patch_id: str, split: str, conv: Conversion, bit_depth: int) -> None:
        """Store one patch: BSQ for the test split, HDF5 otherwise."""
        if split not in SPLITS:
            raise HsicompError(f"patch {patch_id}: unknown split {split!r}")
        cube = conv.cube
        if conv.wavelengths is not None:
            self.wavelengths = conv.wavelengths
        if split == "test":
            rel = f"test/{patch_id}.bsq"
            sha = write_bsq(self._tmp_dir / rel, cube)
        else:
            rel = f"{split}.h5"
            self._h5_file(split).create_dataset(
                f"patches/{patch_id}", data=cube, chunks=(min(16, cube.shape[0]), *cube.shape[1:]),
                compression=self.h5_compression, track_times=False)
            sha = cube_sha256(cube)
        self.records.append(PatchRecord(
            patch_id=patch_id, split=split, bands=cube.shape[0], rows=cube.shape[1],
            cols=cube.shape[2], bit_depth=bit_depth, file=rel, clipped_low=conv.clipped_low,
            clipped_high=conv.clipped_high, nodata=conv.nodata, sha256=sha))

    def _h5_file(self, split: str):
        import h5py

        if split not in self._h5:
            path = self._tmp_dir / f"{split}.h5"
            f = h5py.File(path, "w", track_order=True)
            f.require_group("patches")
            self._h5[split] = (f, path)
        return self._h5[split][0]

    def finish(self) -> list[PatchRecord]:
        """Close files, move them into place (test folder, HDF5 files, manifest last)."""
        ids = [r.patch_id for r in self.records]
        if len(set(ids)) != len(ids):
            raise HsicompError("patch ids are not unique")
        for split in H5_SPLITS:
            self._h5_file(split)  # every split file exists, maybe empty
        for f, _ in self._h5.values():
            f.close()
        test_dir = self.out_dir / "test"
        shutil.rmtree(test_dir, ignore_errors=True)
        os.replace(self._tmp_dir / "test", test_dir)
        for split, (_, path) in self._h5.items():
            os.replace(path, self.out_dir / f"{split}.h5")
        shutil.rmtree(self._tmp_dir, ignore_errors=True)
        bands_file = self.out_dir / BANDS_FILE
        if self.wavelengths is None:
            bands_file.unlink(missing_ok=True)
        else:
            write_table(bands_file, ({"band": i, "wavelength_nm": f"{w:g}"}
                                     for i, w in enumerate(self.wavelengths)), _BAND_COLUMNS)
        write_manifest(self.out_dir / "manifest.csv", self.records)
        return self.records


def patch_seed(seed: int, split: str, index: int) -> int:
    """Seed of synthetic patch ``index`` of ``split``: independent streams per patch."""
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])


def synthetic_patches(spec: dict) -> Iterator[tuple[str, str, Conversion]]:
    """Yield (patch_id, split, conversion) for the built-in synthetic dataset."""
    from hsicomp.data.synthetic import generate_cube

    for split in SPLITS:
        for i in range(int(spec["patches"].get(split, 0))):
            cube = generate_cube(patch_seed(spec["seed"], split, i), bands=spec["bands"],
                                 rows=spec["rows"], cols=spec["cols"], bit_depth=spec["bit_depth"])
            yield f"synth-{split}-{i:04d}", split, Conversion(cube, 0, 0, 0)


def read_split_csv(path: Path) -> list[str]:
    """Relative patch paths listed in a HySpecNet split CSV (one per line)."""
    if not path.is_file():
        raise HsicompError(f"{path}: split file not found (is the dataset unpacked?)")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln.endswith(".npy")]


def hyspecnet_patches(spec: dict) -> Iterator[tuple[str, str, Conversion]]:
    """Yield (patch_id, split, conversion) for a HySpecNet-11k copy under ``spec['root']``."""
    base = Path(spec["root"]) / "hyspecnet-11k"
    if not base.is_dir():
        raise HsicompError(f"{base}: HySpecNet-11k folder not found (set 'root' or 'download')")
    limits = spec.get("max_patches") or {}
    first = True
    for split in SPLITS:
        entries = read_split_csv(base / "splits" / spec.get("split", "hard") / f"{split}.csv")
        limit = limits.get(split)
        for rel in entries[: limit if limit is not None else None]:
            tif = base / "patches" / rel.replace("DATA.npy", "SPECTRAL_IMAGE.TIF")
            data, nodata = read_geotiff([tif], spec.get("bands", "enmap202"))
            patch_id = Path(rel).parent.name
            conv = to_uint(data, spec["bit_depth"], nodata, str(tif))
            if first:
                conv.wavelengths = geotiff_wavelengths(tif, spec.get("bands", "enmap202"))
                first = False
            yield patch_id, split, conv


def folder_patches(spec: dict) -> Iterator[tuple[str, str, Conversion]]:
    """Yield (patch_id, split, conversion) for a folder of GeoTIFF cubes."""
    folder = Path(spec["path"])
    if not folder.is_dir():
        raise HsicompError(f"{folder}: folder not found")
    if spec.get("mosaics"):
        groups = {name: [folder / f for f in files] for name, files in spec["mosaics"].items()}
    else:
        files = sorted(folder.glob(spec.get("pattern", "*.tif")))
        if not files:
            raise HsicompError(f"{folder}: no files match {spec.get('pattern', '*.tif')!r}")
        groups = {f.stem: [f] for f in files}
    assignment = spec.get("splits") or {}
    for i, patch_id in enumerate(sorted(groups)):
        split = next((s for s in H5_SPLITS
                      if any(fnmatch.fnmatch(patch_id, pat) for pat in assignment.get(s, []))),
                     "test")
        data, nodata = read_geotiff(groups[patch_id], spec.get("bands", "all"))
        nodata = spec.get("nodata", nodata)
        conv = to_uint(data, spec["bit_depth"], nodata, str(groups[patch_id][0]))
        if i == 0:
            conv.wavelengths = geotiff_wavelengths(groups[patch_id][0], spec.get("bands", "all"))
        yield patch_id, split, conv


SOURCES = {"synthetic": synthetic_patches, "hyspecnet": hyspecnet_patches,
           "geotiff_folder": folder_patches}


def prepare(spec: dict, out_dir: Path, progress: bool = True) -> list[PatchRecord]:
    """Prepare a dataset described by ``spec`` into ``out_dir``; return its manifest rows."""
    kind = spec.get("kind")
    if kind not in SOURCES:
        raise HsicompError(f"unknown dataset kind {kind!r} (known: {', '.join(SOURCES)})")
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = PatchWriter(out_dir, spec.get("h5_compression", "lzf"))
    for patch_id, split, conv in progress_bar(SOURCES[kind](spec), desc=f"prepare {out_dir.name}",
                                              unit="patch", enabled=progress):
        writer.add(patch_id, split, conv, spec["bit_depth"])
    return writer.finish()
