"""A miniature HySpecNet-11k: synthetic EnMAP-like patches, split files and archives.

The folder layout, file names and archive names follow the published data set, so code that
reads the real data can be tested against it. Everything is deterministic.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np

NODATA = -32768
BANDS = 224
DATASET_DIR = "hyspecnet-11k"
SPLIT_KINDS = ("easy", "hard")
SPLIT_NAMES = ("train", "val", "test")
_MTIME = 1_700_000_000  # fixed member time in the archives


def tile_name(index: int) -> str:
    """Return an EnMAP L2A tile name; the data-take number varies with ``index``."""
    return (f"ENMAP01-____L2A-DT{4981 + 17 * index:010d}_20221102T031513Z_{4 + index:03d}"
            "_V010110_20221116T123616Z")


def patch_name(tile: str, index: int) -> str:
    """Return the name of patch ``index`` of ``tile`` (its pixel offsets in the tile)."""
    return f"{tile}-Y{(index // 4) * 128:05d}_X{(index % 4) * 128:05d}"


def spectral_values(seed: int, rows: int = 16, cols: int = 16, bands: int = BANDS) -> np.ndarray:
    """Return an int16 (bands, rows, cols) cube: smooth reflectance x 10000 with outliers."""
    rng = np.random.default_rng(seed)
    wl = np.linspace(420.0, 2450.0, bands)
    # Three smooth end-member spectra: soil, vegetation, water.
    soil = 0.08 + 0.25 * (wl - 420.0) / 2030.0
    veg = 0.04 + 0.42 / (1.0 + np.exp(-(wl - 720.0) / 15.0)) * np.exp(-((wl - 900.0) / 900.0) ** 2)
    water = 0.06 * np.exp(-(wl - 420.0) / 150.0)
    absorption = 1.0 - 0.8 * (np.exp(-((wl - 1400.0) / 40.0) ** 2)
                              + np.exp(-((wl - 1900.0) / 50.0) ** 2))
    ends = np.stack([soil, veg, water]) * absorption  # (3, bands)

    yy, xx = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(3, 2))
    abund = np.stack([1.2 + np.sin(3.0 * yy + phase[k, 0]) * np.cos(2.0 * xx + phase[k, 1])
                      for k in range(3)])
    abund /= abund.sum(axis=0, keepdims=True)  # (3, rows, cols)
    refl = np.einsum("kb,krc->brc", ends, abund)
    refl *= rng.uniform(0.9, 1.4)
    cube = np.clip(refl * 10000.0 + rng.normal(0.0, 20.0, refl.shape), 0.0, 6000.0)
    cube = np.rint(cube).astype(np.int16)

    n = rows * cols
    pixels = cube.reshape(bands, n)  # a view: writes go to ``cube``
    order = rng.permutation(n)
    nodata_pixels, valid = order[: max(1, n // 64)], order[max(1, n // 64):]
    pixels[:, nodata_pixels] = NODATA  # no data in every band
    # A few slightly negative values and a few above 14 bits, at valid pixels.
    pixels[rng.integers(0, bands, 5), rng.choice(valid, 5)] = -rng.integers(1, 200, 5)
    pixels[rng.integers(0, bands, 5), rng.choice(valid, 5)] = 20000
    return cube


def _geo_profile(seed: int, rows: int, cols: int) -> dict:
    """Return the GeoTIFF settings shared by a patch's files (UTM 33N, 30 m pixels)."""
    from affine import Affine

    rng = np.random.default_rng(seed + 1)
    x0 = 400_000.0 + 30.0 * int(rng.integers(0, 10_000))
    y0 = 5_500_000.0 - 30.0 * int(rng.integers(0, 10_000))
    return {"driver": "GTiff", "height": rows, "width": cols, "crs": "EPSG:32633",
            "transform": Affine(30.0, 0.0, x0, 0.0, -30.0, y0), "compress": "deflate"}


def write_spectral_tif(path: Path, seed: int, rows: int = 16, cols: int = 16,
                       bands: int = BANDS) -> None:
    """Write a deflate-compressed int16 GeoTIFF (EPSG:32633, 30 m) like an EnMAP patch."""
    import rasterio

    data = spectral_values(seed, rows, cols, bands)
    profile = {"dtype": "int16", "count": bands, "nodata": NODATA, "interleave": "band",
               **_geo_profile(seed, rows, cols)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)


def _write_pixel_mask(path: Path, seed: int, rows: int, cols: int) -> None:
    """Write a one-band uint8 mask (1 where the patch has no data)."""
    import rasterio

    mask = (spectral_values(seed, rows, cols)[0] == NODATA).astype(np.uint8)
    with rasterio.open(path, "w", dtype="uint8", count=1, **_geo_profile(seed, rows, cols)) as ds:
        ds.write(mask, 1)


def build_hyspecnet_tree(root: Path, tiles: int = 2, patches_per_tile: int = 3,
                         rows: int = 16, cols: int = 16) -> dict:
    """Create ``root/hyspecnet-11k/{patches,splits}`` like the published data set.

    Returns ``{"root", "tiles", "patches", "seeds", "splits"}``: ``patches`` lists patch
    folders relative to ``patches/``, ``seeds`` maps each of them to its seed, and
    ``splits[kind][split]`` lists the patch folders of each split file.
    """
    if tiles < 2 or patches_per_tile < 2:
        raise ValueError("need at least 2 tiles and 2 patches per tile")
    base = Path(root) / DATASET_DIR
    tile_names = [tile_name(t) for t in range(tiles)]
    by_tile: dict[str, list[str]] = {}
    seeds: dict[str, int] = {}
    for t, tile in enumerate(tile_names):
        by_tile[tile] = []
        for p in range(patches_per_tile):
            patch = patch_name(tile, p)
            rel = f"{tile}/{patch}"
            seed = 1000 * (t + 1) + p
            folder = base / "patches" / rel
            write_spectral_tif(folder / f"{patch}-SPECTRAL_IMAGE.TIF", seed, rows, cols)
            _write_pixel_mask(folder / f"{patch}-QL_PIXELMASK.TIF", seed, rows, cols)
            by_tile[tile].append(rel)
            seeds[rel] = seed
    patches = [rel for tile in tile_names for rel in by_tile[tile]]

    easy = {name: patches[i::3] for i, name in enumerate(SPLIT_NAMES)}
    if tiles >= 3:  # whole tiles per split
        hard = {"train": [r for t in tile_names[:-2] for r in by_tile[t]],
                "val": list(by_tile[tile_names[-2]]), "test": list(by_tile[tile_names[-1]])}
    else:  # the first tile gives train and val, the last one test
        first = by_tile[tile_names[0]]
        hard = {"train": first[:-1], "val": first[-1:], "test": list(by_tile[tile_names[-1]])}
    splits = {"easy": easy, "hard": hard}
    for kind, lists in splits.items():
        folder = base / "splits" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for name, rels in lists.items():
            lines = "".join(f"{rel}/{rel.split('/')[1]}-DATA.npy\n" for rel in rels)
            (folder / f"{name}.csv").write_text(lines, encoding="utf-8")
    return {"root": base, "tiles": tile_names, "patches": patches, "seeds": seeds,
            "splits": splits}


def _tar_gz(out: Path, base: Path, files: list[Path]) -> str:
    """Write ``files`` (below ``base``) plus their parent folders as a reproducible tar.gz."""
    names: set[str] = set()
    for f in files:
        rel = f.relative_to(base)
        names.add(rel.as_posix())
        names.update(parent.as_posix() for parent in rel.parents if parent.as_posix() != ".")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(names):
            path = base / name
            info = tarfile.TarInfo(name)
            info.mtime = _MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buf.getvalue())
    out.write_bytes(raw.getvalue())
    return hashlib.md5(raw.getvalue(), usedforsecurity=False).hexdigest()


def build_hyspecnet_archives(src_root: Path, out_dir: Path, parts: int = 2) -> dict[str, str]:
    """Pack a tree from :func:`build_hyspecnet_tree` into the published archive set.

    Patch folders are shared out over ``hyspecnet-11k-01.tar.gz`` ... ``-NN.tar.gz``; the
    split files go to ``hyspecnet-11k-splits.tar.gz``. Each archive unpacks on its own into
    ``hyspecnet-11k/...``. Returns ``{archive name: md5}``.
    """
    src_root = Path(src_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = src_root / DATASET_DIR
    patch_dirs = sorted(p for p in (base / "patches").glob("*/*") if p.is_dir())
    if not 1 <= parts <= len(patch_dirs):
        raise ValueError(f"parts must be between 1 and {len(patch_dirs)}")
    result: dict[str, str] = {}
    for i, chunk in enumerate(np.array_split(np.arange(len(patch_dirs)), parts), start=1):
        files = sorted(f for j in chunk for f in patch_dirs[j].iterdir() if f.is_file())
        name = f"{DATASET_DIR}-{i:02d}.tar.gz"
        result[name] = _tar_gz(out_dir / name, src_root, files)
    split_files = sorted(f for f in (base / "splits").rglob("*") if f.is_file())
    name = f"{DATASET_DIR}-splits.tar.gz"
    result[name] = _tar_gz(out_dir / name, src_root, split_files)
    return result
