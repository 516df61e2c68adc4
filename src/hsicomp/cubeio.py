"""Reading and writing cubes as uint16 arrays (bands, rows, cols), format chosen by extension.

Formats: raw BSQ (``.bsq``/``.raw``, uint16 little-endian, dimensions given separately),
NumPy ``.npy``, GeoTIFF ``.tif``/``.tiff`` (bands first), ENVI (``.hdr`` header beside a
binary data file) and HDF5 ``.h5``/``.hdf5``. Whatever the format, samples must be integer
values in 0..65535; anything else is refused with a one-line :class:`HsicompError`.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from hsicomp.atomic import atomic_path, atomic_write_text
from hsicomp.bsq import read_bsq, write_bsq
from hsicomp.errors import HsicompError
from hsicomp.paths import check_output, input_file

RAW_SUFFIXES = (".bsq", ".raw")
NPY_SUFFIXES = (".npy",)
TIFF_SUFFIXES = (".tif", ".tiff")
ENVI_SUFFIXES = (".hdr",)
HDF5_SUFFIXES = (".h5", ".hdf5")
SUFFIXES = RAW_SUFFIXES + NPY_SUFFIXES + TIFF_SUFFIXES + ENVI_SUFFIXES + HDF5_SUFFIXES

#: Dataset name :func:`write_cube` uses in HDF5 files.
H5_DATASET = "cube"
#: Extension of the data file :func:`write_cube` writes beside an ENVI header.
ENVI_DATA_SUFFIX = ".img"
#: Data files looked for beside an ENVI header, in order.
ENVI_DATA_CANDIDATES = (".img", "", ".dat", ".bsq", ".bil", ".bip", ".raw")
#: ENVI ``data type`` codes and the NumPy types they stand for (byte order set separately).
ENVI_TYPES = {1: "u1", 2: "i2", 3: "i4", 4: "f4", 5: "f8", 12: "u2", 13: "u4", 14: "i8",
              15: "u8"}


def cube_format(path: str | os.PathLike) -> str:
    """The lower-case extension of a cube path; HsicompError for unknown formats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise HsicompError(f"{path}: unknown cube format {suffix or '(no extension)'!r} "
                           f"(known: {', '.join(SUFFIXES)})")
    return suffix


def to_uint16(array: np.ndarray, source: str) -> np.ndarray:
    """Check that a 3-D array holds integer values in 0..65535; return it as uint16."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise HsicompError(f"{source}: expected a 3-D cube (bands, rows, cols), got shape "
                           f"{array.shape}")
    if array.size == 0:
        raise HsicompError(f"{source}: empty cube of shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "uif":
        raise HsicompError(f"{source}: unsupported sample type {array.dtype}")
    if array.dtype == np.uint16:
        return np.ascontiguousarray(array)
    if kind == "f":
        if np.isnan(array).any():
            raise HsicompError(f"{source}: cube holds NaN values")
        if not np.isfinite(array).all():
            raise HsicompError(f"{source}: cube holds infinite values")
        if (array != np.floor(array)).any():
            raise HsicompError(f"{source}: float cube holds non-integer values")
    low, high = array.min(), array.max()
    if low < 0:
        raise HsicompError(f"{source}: negative sample values (minimum {low:g})")
    if high > 65535:
        raise HsicompError(f"{source}: sample values above 65535 (maximum {high:g})")
    return np.ascontiguousarray(array, dtype=np.uint16)


def read_cube(path: str | os.PathLike, dims: tuple[int, int, int] | None = None,
              dataset: str | None = None) -> np.ndarray:
    """Read a cube as uint16 (bands, rows, cols).

    ``dims`` (bands, rows, cols) is required for raw ``.bsq``/``.raw`` files; ``dataset``
    names the HDF5 dataset (default: the file's only 3-D dataset). An ENVI cube is read
    from its ``.hdr`` path.
    """
    path = Path(path)
    suffix = cube_format(path)
    input_file(path)
    if suffix in RAW_SUFFIXES:
        if dims is None:
            raise HsicompError(f"{path}: raw cube needs its dimensions (bands, rows, cols)")
        if len(dims) != 3 or min(dims) < 1:
            raise HsicompError(f"{path}: bad dimensions {dims}")
        return read_bsq(path, *dims)
    if suffix in NPY_SUFFIXES:
        array = _read_npy(path)
    elif suffix in TIFF_SUFFIXES:
        array = _read_tiff(path)
    elif suffix in ENVI_SUFFIXES:
        array = _read_envi(path)
    else:
        array = _read_hdf5(path, dataset)
    return to_uint16(array, str(path))


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise HsicompError(f"{path}: not a readable .npy file ({_line(exc)})") from None


def _read_tiff(path: Path) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read()
    except (RasterioError, OSError) as exc:
        raise HsicompError(f"{path}: not a readable GeoTIFF ({_line(exc)})") from None


def _read_hdf5(path: Path, dataset: str | None) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if dataset is None:
                found: list[str] = []
                f.visititems(lambda name, obj: found.append(name)
                             if isinstance(obj, h5py.Dataset) and obj.ndim == 3 else None)
                if len(found) != 1:
                    listed = ", ".join(found[:5]) if found else "none"
                    raise HsicompError(f"{path}: {len(found)} 3-D datasets ({listed}); "
                                       f"name the one to read")
                dataset = found[0]
            obj = f.get(dataset)
            if not isinstance(obj, h5py.Dataset):
                raise HsicompError(f"{path}: no dataset {dataset!r}")
            return obj[()]
    except OSError as exc:
        raise HsicompError(f"{path}: not a readable HDF5 file ({_line(exc)})") from None


def parse_envi_header(path: Path) -> dict[str, str]:
    """Parse an ENVI header into lower-case keys and raw string values."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read ENVI header ({_line(exc)})") from None
    if not text.lstrip().startswith("ENVI"):
        raise HsicompError(f"{path}: not an ENVI header (no 'ENVI' first line)")
    fields: dict[str, str] = {}
    for match in re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, re.MULTILINE):
        fields[match.group(1).strip().lower()] = match.group(2).strip()
    return fields


def _envi_int(fields: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    if key not in fields:
        if default is None:
            raise HsicompError(f"{path}: ENVI header lacks '{key}'")
        return default
    try:
        return int(fields[key])
    except ValueError:
        raise HsicompError(f"{path}: bad ENVI '{key}' value {fields[key]!r}") from None


def cube_files(path: str | os.PathLike, written: bool = False) -> list[Path]:
    """The files of the cube at ``path``: ``path`` itself and, for an ENVI header, its data
    file (the one :func:`read_cube` reads, when it exists, or with ``written`` the one
    :func:`write_cube` writes)."""
    path = Path(path)
    if path.suffix.lower() not in ENVI_SUFFIXES:
        return [path]
    if written:
        return [path.with_suffix(ENVI_DATA_SUFFIX), path]
    try:
        return [path, _envi_data_file(path)]
    except HsicompError:
        return [path]


def _envi_data_file(header: Path) -> Path:
    stem = header.with_suffix("")
    for ext in ENVI_DATA_CANDIDATES:
        candidate = stem.with_name(stem.name + ext)
        if candidate.is_file():
            return candidate
    raise HsicompError(f"{header}: no ENVI data file beside it (looked for "
                       f"{', '.join(stem.name + e for e in ENVI_DATA_CANDIDATES)})")


def _read_envi(path: Path) -> np.ndarray:
    fields = parse_envi_header(path)
    cols = _envi_int(fields, "samples", path)
    rows = _envi_int(fields, "lines", path)
    bands = _envi_int(fields, "bands", path)
    code = _envi_int(fields, "data type", path)
    order = _envi_int(fields, "byte order", path, 0)
    offset = _envi_int(fields, "header offset", path, 0)
    interleave = fields.get("interleave", "bsq").lower()
    if code not in ENVI_TYPES:
        raise HsicompError(f"{path}: unsupported ENVI data type {code}")
    if order not in (0, 1):
        raise HsicompError(f"{path}: bad ENVI byte order {order}")
    if interleave not in ("bsq", "bil", "bip"):
        raise HsicompError(f"{path}: unknown ENVI interleave {interleave!r}")
    if min(cols, rows, bands) < 1 or offset < 0:
        raise HsicompError(f"{path}: bad ENVI dimensions {bands}x{rows}x{cols}")
    dtype = np.dtype(ENVI_TYPES[code]).newbyteorder("<" if order == 0 else ">")
    data_file = _envi_data_file(path)
    expected = offset + bands * rows * cols * dtype.itemsize
    size = data_file.stat().st_size
    if size != expected:
        raise HsicompError(f"{data_file}: size {size} bytes does not match the header "
                           f"({bands}x{rows}x{cols} {dtype.name}, offset {offset}: "
                           f"{expected} bytes)")
    flat = np.fromfile(data_file, dtype=dtype, offset=offset)
    if interleave == "bsq":
        return flat.reshape(bands, rows, cols)
    if interleave == "bil":
        return flat.reshape(rows, bands, cols).transpose(1, 0, 2)
    return flat.reshape(rows, cols, bands).transpose(2, 0, 1)


def write_cube(path: str | os.PathLike, cube: np.ndarray, dataset: str = H5_DATASET) -> None:
    """Write a cube (integer values in 0..65535) atomically, format chosen by extension.

    ``.bsq``/``.raw``: uint16 LE band-sequential bytes only (keep the dimensions elsewhere).
    ``.npy``: uint16 (bands, rows, cols). ``.tif``/``.tiff``: uint16 GeoTIFF, one band per
    spectral band, no georeferencing. ``.hdr``: ENVI header at ``path`` plus the uint16 LE
    BSQ data file beside it with extension ``.img`` (data written first, header last).
    ``.h5``/``.hdf5``: dataset ``dataset`` (default ``cube``) holding (bands, rows, cols).
    """
    path = Path(path)
    suffix = cube_format(path)
    cube = to_uint16(cube, str(path))
    if suffix in RAW_SUFFIXES:
        write_bsq(path, cube)
    elif suffix in NPY_SUFFIXES:
        with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as f:
            np.save(f, cube, allow_pickle=False)
    elif suffix in TIFF_SUFFIXES:
        _write_tiff(path, cube)
    elif suffix in ENVI_SUFFIXES:
        _write_envi(path, cube)
    else:
        import h5py

        with atomic_path(path, suffix=suffix) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset(dataset, data=cube)


def _write_tiff(path: Path, cube: np.ndarray) -> None:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    bands, rows, cols = cube.shape
    with atomic_path(path, suffix=path.suffix) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", driver="GTiff", width=cols, height=rows, count=bands,
                           dtype="uint16") as dst:
            dst.write(cube)


def _write_envi(path: Path, cube: np.ndarray) -> None:
    bands, rows, cols = cube.shape
    check_output(path)  # before the data file, so a refused header leaves nothing behind
    write_bsq(path.with_suffix(ENVI_DATA_SUFFIX), cube)
    header = (
        "ENVI\n"
        "description = {hsicomp cube}\n"
        f"samples = {cols}\n"
        f"lines = {rows}\n"
        f"bands = {bands}\n"
        "header offset = 0\n"
        "file type = ENVI Standard\n"
        "data type = 12\n"
        "interleave = bsq\n"
        "byte order = 0\n"
    )
    atomic_write_text(path, header)


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
