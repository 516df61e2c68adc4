"""Reading and writing cubes as uint16 arrays (bands, rows, cols), format chosen by extension.

Formats: raw BSQ (``.bsq``/``.raw``, uint16 little-endian, dimensions given separately),
NumPy ``.npy``, GeoTIFF ``.tif``/``.tiff`` (bands first), ENVI (``.hdr`` header beside a
binary data file) and HDF5 ``.h5``/``.hdf5``. Whatever the format, samples must be integer
values in 0..65535; anything else is refused with a one-line :class:`HsicompError`.

:func:`read_product` also takes what the file says besides its samples (sample type,
nodata, axis order, georeferencing, header fields, attributes: see :mod:`hsicomp.io.metadata`)
and can select bands; :func:`write_cube` given that metadata writes it back when the output
has the input's format, and the samples in the input's type whatever the format.
"""

from __future__ import annotations

import base64
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from hsicomp.io.bands import resolve_band_list
from hsicomp.io.bsq import read_bsq, write_bsq
from hsicomp.io.metadata import apply_nodata, number_from_json, number_to_json, restore_samples
from hsicomp.io.paths import check_output, input_file

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
#: ENVI header fields holding one value per band (subset with the bands).
ENVI_BAND_FIELDS = ("wavelength", "fwhm", "band names", "bbl", "data gain values",
                    "data offset values", "data reflectance gain values",
                    "data reflectance offset values")
#: Array axis orders of ``--layout``: the stored axes, as (bands, rows, cols) positions.
LAYOUTS = {"bsq": "(bands, rows, cols)", "bil": "(rows, bands, cols)",
           "bip": "(rows, cols, bands)"}
#: How much squarer the first two axes must be than the last two for a (rows, cols, bands)
#: guess (see :func:`read_product`).
LAYOUT_MARGIN = 1.5
_TO_BSQ = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (2, 0, 1)}
_FROM_BSQ = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}
#: Wider sample types for those GeoTIFF (float16) and ENVI (float16, int8) cannot hold.
_WIDER = {"tiff": {"float16": "float32"}, "envi": {"float16": "float32", "int8": "int16"}}
#: ``nodata`` argument of :func:`read_product`: the value the file itself declares.
FILE_NODATA = "file"


def cube_format(path: str | os.PathLike) -> str:
    """The lower-case extension of a cube path; HsicompError for unknown formats."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise HsicompError(f"{path}: unknown cube format {suffix or '(no extension)'!r} "
                           f"(known: {', '.join(SUFFIXES)})")
    return suffix


def format_family(suffix: str) -> str:
    """The metadata name of a format (``raw``, ``npy``, ``tiff``, ``envi``, ``hdf5``)."""
    for name, suffixes in (("raw", RAW_SUFFIXES), ("npy", NPY_SUFFIXES),
                           ("tiff", TIFF_SUFFIXES), ("envi", ENVI_SUFFIXES)):
        if suffix in suffixes:
            return name
    return "hdf5"


def to_uint16(array: np.ndarray, source: str, hint: str = "") -> np.ndarray:
    """Check that a 3-D array holds integer values in 0..65535; return it as uint16.

    ``hint`` is appended to the messages about NaN and negative values."""
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
            raise HsicompError(f"{source}: cube holds NaN values{hint}")
        if not np.isfinite(array).all():
            raise HsicompError(f"{source}: cube holds infinite values")
        if (array != np.floor(array)).any():
            raise HsicompError(f"{source}: float cube holds non-integer values")
    low, high = array.min(), array.max()
    if low < 0:
        raise HsicompError(f"{source}: negative sample values (minimum {low:g}){hint}")
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


def _read_tiff(path: Path, bands: str | None = None,
               meta: dict[str, Any] | None = None) -> np.ndarray:
    """The GeoTIFF's ``bands`` (a band-list spec, see :mod:`hsicomp.io.bands`; all when None).
    With ``meta``, its georeferencing, nodata, descriptions, tags, scales, offsets and units
    of those bands, and their 0-based indices (``band_indices``), go into ``meta``."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                index = resolve_band_list(bands, src.count)
                if meta is not None:
                    meta.update(_tiff_metadata(src, index))
                    meta["band_indices"] = index
                if index == list(range(src.count)):
                    return src.read()
                return src.read([b + 1 for b in index])
    except (RasterioError, OSError) as exc:
        raise HsicompError(f"{path}: not a readable GeoTIFF ({_line(exc)})") from None


def _tiff_metadata(src: Any, index: list[int]) -> dict[str, Any]:
    """What an open GeoTIFF says besides its samples, for bands ``index`` (only what differs
    from a plain GeoTIFF's defaults)."""
    meta: dict[str, Any] = {}
    if src.crs is not None:
        meta["crs"] = src.crs.to_wkt()
    if not src.transform.is_identity or src.crs is not None:
        meta["transform"] = list(src.transform)[:6]
    if src.nodata is not None:
        meta["nodata"] = number_to_json(src.nodata)
    per_band = {
        "descriptions": ([src.descriptions[b] for b in index], None),
        "band_tags": ([src.tags(b + 1) for b in index], {}),
        "scales": ([src.scales[b] for b in index], 1.0),
        "offsets": ([src.offsets[b] for b in index], 0.0),
        "units": ([src.units[b] for b in index], None),
    }
    for key, (values, default) in per_band.items():
        if any(v != default and v != "" for v in values):
            meta[key] = values
    tags = src.tags()
    if tags:
        meta["tags"] = tags
    return meta


def _read_hdf5(path: Path, dataset: str | None,
               meta: dict[str, Any] | None = None) -> np.ndarray:
    """The dataset's array; with ``meta``, its name and attributes go into ``meta``."""
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
            if meta is not None:
                meta["dataset"] = obj.name.lstrip("/")
                for key, attrs in (("attrs", obj.attrs), ("file_attrs", f.attrs)):
                    carried = _attrs_to_json(attrs)
                    if carried:
                        meta[key] = carried
            return obj[()]
    except OSError as exc:
        raise HsicompError(f"{path}: not a readable HDF5 file ({_line(exc)})") from None


def _attrs_to_json(attrs: Any) -> dict[str, dict[str, Any]]:
    """HDF5 attributes as JSON: text, bytes, numeric or text arrays (other kinds are left
    out: compound types, references)."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in attrs.items():
        if isinstance(value, str):
            out[name] = {"str": value}
        elif isinstance(value, bytes):
            out[name] = {"bytes": base64.b64encode(value).decode("ascii")}
        else:
            array = np.asarray(value)
            if array.dtype.kind in "biufcS" and array.dtype.names is None:
                out[name] = {"dtype": array.dtype.str, "shape": list(array.shape),
                             "data": base64.b64encode(array.tobytes()).decode("ascii")}
            elif array.dtype.kind == "O" and all(isinstance(v, str) for v in array.flat):
                out[name] = {"strs": [str(v) for v in array.flat], "shape": list(array.shape)}
    return out


def _attrs_from_json(carried: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The attribute values :func:`_attrs_to_json` recorded."""
    import h5py

    out: dict[str, Any] = {}
    for name, entry in carried.items():
        if "str" in entry:
            out[name] = str(entry["str"])
        elif "bytes" in entry:
            out[name] = np.bytes_(base64.b64decode(entry["bytes"]))
        elif "strs" in entry:
            out[name] = np.array(entry["strs"], dtype=h5py.string_dtype()).reshape(
                entry["shape"])
        else:
            dtype = np.dtype(entry["dtype"])
            raw = base64.b64decode(entry["data"])
            shape = tuple(int(n) for n in entry["shape"])
            if len(raw) != dtype.itemsize * math.prod(shape):
                raise ValueError(f"attribute {name!r} of the wrong size")
            out[name] = np.frombuffer(raw, dtype).reshape(shape)
    return out


def envi_fields(path: Path) -> list[tuple[str, str]]:
    """The (key, raw value) fields of an ENVI header, in order, keys as written."""
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read ENVI header ({_line(exc)})") from None
    if not text.lstrip().startswith("ENVI"):
        raise HsicompError(f"{path}: not an ENVI header (no 'ENVI' first line)")
    return [(m.group(1).strip(), m.group(2).strip()) for m in
            re.finditer(r"^\s*([^=\n]+?)\s*=\s*(\{[^}]*\}|[^\n]*)", text, re.MULTILINE)]


def parse_envi_header(path: Path) -> dict[str, str]:
    """Parse an ENVI header into lower-case keys and raw string values."""
    return {key.lower(): value for key, value in envi_fields(path)}


def _envi_list(value: str) -> list[str] | None:
    """The items of a ``{a, b, ...}`` ENVI value (None for a single value)."""
    value = value.strip()
    if not (value.startswith("{") and value.endswith("}")):
        return None
    return [item.strip() for item in value[1:-1].split(",")]


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


def _read_envi(path: Path, meta: dict[str, Any] | None = None) -> np.ndarray:
    """The ENVI cube as (bands, rows, cols); with ``meta``, its header fields (in order,
    keys as written), interleave and byte order go into ``meta``."""
    ordered = envi_fields(path)
    fields = {key.lower(): value for key, value in ordered}
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
    if meta is not None:
        meta.update(fields=[[key, value] for key, value in ordered], interleave=interleave,
                    byte_order=order)
    flat = np.fromfile(data_file, dtype=dtype, offset=offset)
    if interleave == "bsq":
        return flat.reshape(bands, rows, cols)
    if interleave == "bil":
        return flat.reshape(rows, bands, cols).transpose(1, 0, 2)
    return flat.reshape(rows, cols, bands).transpose(2, 0, 1)


@dataclass
class Product:
    """A cube to code, read from a user's file, with what that file said besides its samples."""

    #: uint16 (bands, rows, cols) samples to code.
    cube: np.ndarray
    #: The metadata to carry (see :mod:`hsicomp.io.metadata`; empty: nothing to carry).
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Original 0-based indices of the cube's bands (None: all bands of the file).
    band_list: list[int] | None = None


def _check_layout(path: Path, shape: tuple[int, ...]) -> None:
    """HsicompError when an array's shape looks like (rows, cols, bands) rather than (bands,
    rows, cols): its first two axes are equal and the third is not, or their aspect ratio is
    less than 1/1.5 of that of the last two (the two sides of a scene are usually alike)."""
    def aspect(a: int, b: int) -> float:
        return max(a, b) / max(1, min(a, b))

    first, last = aspect(shape[0], shape[1]), aspect(shape[1], shape[2])
    if (shape[0] == shape[1] != shape[2]) or last > LAYOUT_MARGIN * first:
        raise HsicompError(f"{path}: shape {tuple(shape)} looks like (rows, cols, bands); "
                           f"give --layout bip if it is, --layout bsq if bands come first")


def _envi_band_subset(fields: list[list[str]], index: list[int], n_bands: int) -> None:
    """Keep the values of the selected bands in the per-band ENVI fields (in place)."""
    for entry in fields:
        if entry[0].lower() in ENVI_BAND_FIELDS:
            items = _envi_list(entry[1])
            if items is not None and len(items) == n_bands:
                entry[1] = "{" + ", ".join(items[b] for b in index) + "}"


def _declared_nodata(family: str, fmt: dict[str, Any]) -> float | None:
    """The nodata value a file declares (GeoTIFF nodata, ENVI data ignore value)."""
    if family == "tiff" and "nodata" in fmt:
        return float(number_from_json(fmt["nodata"]))
    if family == "envi":
        for key, value in fmt.get("fields", []):
            if key.lower() == "data ignore value":
                try:
                    return float(value)
                except ValueError:
                    return None
    return None


def read_product(path: str | os.PathLike, dims: tuple[int, int, int] | None = None,
                 dataset: str | None = None, layout: str | None = None,
                 bands: str | None = None, nodata: float | str | None = FILE_NODATA,
                 bit_depth: int = 16) -> Product:
    """Read a user's cube file for coding, keeping what it says besides its samples.

    ``layout`` is the axis order of a ``.npy`` or HDF5 array (see :data:`LAYOUTS`); when
    None, an array whose shape looks like (rows, cols, bands) is refused. ``bands`` selects
    bands (a band-list spec, see :func:`hsicomp.io.bands.resolve_band_list`). ``nodata``: the
    value of missing samples (:data:`FILE_NODATA`: the one the file declares; None: none),
    handled as :func:`hsicomp.io.metadata.apply_nodata` says.
    """
    path = Path(path)
    suffix = cube_format(path)
    family = format_family(suffix)
    input_file(path)
    if layout is not None and family not in ("npy", "hdf5"):
        raise HsicompError(f"{path}: --layout applies to .npy and HDF5 inputs only")
    fmt: dict[str, Any] = {}
    index: list[int] | None = None
    if family == "raw":
        array = read_cube(path, dims=dims)
    elif family == "tiff":
        array = _read_tiff(path, bands, fmt)
        index = fmt.pop("band_indices")
    elif family == "envi":
        array = _read_envi(path, fmt)
    else:
        array = _read_npy(path) if family == "npy" else _read_hdf5(path, dataset, fmt)
        if array.ndim == 3:
            if layout is None:
                _check_layout(path, array.shape)
            array = array.transpose(_TO_BSQ[layout or "bsq"])
    if array.ndim != 3:
        to_uint16(array, str(path))  # refuses it, naming the shape
    if index is None:
        index = resolve_band_list(bands, array.shape[0])
        if index != list(range(array.shape[0])):
            if family == "envi":
                _envi_band_subset(fmt["fields"], index, array.shape[0])
            array = array[index]
    dtype = array.dtype.str
    value = _declared_nodata(family, fmt) if nodata == FILE_NODATA else nodata
    array, entry = apply_nodata(array, value, bit_depth)
    hint = "; give --nodata VALUE (a number or nan) if it marks missing samples" \
        if value is None else ""
    cube = to_uint16(array, str(path), hint)
    meta: dict[str, Any] = {}
    if dtype != "<u2":
        meta["dtype"] = dtype
    if layout not in (None, "bsq"):
        meta["layout"] = layout
    if entry is not None:
        meta["nodata"] = entry
    if fmt.get("dataset") == H5_DATASET:
        del fmt["dataset"]  # the name written by default
    if fmt:
        meta[family] = fmt
    if meta:
        meta = {"format": family, **meta}
    selected = None if index == list(range(len(index))) else index  # as the header says
    return Product(cube, meta, selected)


def write_cube(path: str | os.PathLike, cube: np.ndarray, dataset: str = H5_DATASET,
               metadata: dict[str, Any] | None = None) -> None:
    """Write a cube (integer values in 0..65535) atomically, format chosen by extension.

    ``.bsq``/``.raw``: uint16 LE band-sequential bytes only (keep the dimensions elsewhere).
    ``.npy``: uint16 (bands, rows, cols). ``.tif``/``.tiff``: uint16 GeoTIFF, one band per
    spectral band, no georeferencing. ``.hdr``: ENVI header at ``path`` plus the uint16 LE
    BSQ data file beside it with extension ``.img`` (data written first, header last).
    ``.h5``/``.hdf5``: dataset ``dataset`` (default ``cube``) holding (bands, rows, cols).

    With ``metadata`` (see :mod:`hsicomp.io.metadata`) the samples are written in the input's
    type with its nodata values put back (a type the format cannot hold is widened; raw
    output, uint16 only, gets the coded samples), and when the output has the input's
    format, that format's metadata too: GeoTIFF georeferencing, nodata, descriptions, tags,
    scales, offsets and units; ENVI header fields and interleave; HDF5 dataset name and
    attributes; the axis order of a ``.npy`` or HDF5 array.
    """
    path = Path(path)
    suffix = cube_format(path)
    family = format_family(suffix)
    cube = to_uint16(cube, str(path))
    meta = metadata or {}
    values = restore_samples(cube, meta, str(path)) if meta else cube
    own = meta.get(family, {}) if meta.get("format") == family else {}
    layout = meta.get("layout", "bsq") if meta.get("format") == family else "bsq"
    try:
        if family == "raw":
            same = values.dtype.kind == "u" and values.dtype.itemsize == 2
            write_bsq(path, values.astype(np.uint16) if same else cube)
        elif family == "npy":
            with atomic_path(path, suffix=suffix) as tmp, open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(values.transpose(_FROM_BSQ[layout])),
                        allow_pickle=False)
        elif family == "tiff":
            _write_tiff(path, values, own)
        elif family == "envi":
            _write_envi(path, values, own)
        else:
            _write_hdf5(path, values.transpose(_FROM_BSQ[layout]),
                        own.get("dataset", dataset), own)
    except (KeyError, TypeError, ValueError) as exc:
        if not meta:
            raise
        raise HsicompError(f"{path}: cannot write the file's metadata ({_line(exc)})") from None


def _widened(dtype: np.dtype, family: str) -> np.dtype:
    """``dtype``, or a wider type of the same kind when format ``family`` cannot hold it."""
    return np.dtype(_WIDER[family].get(dtype.name, dtype.name)).newbyteorder(dtype.byteorder)


def _write_tiff(path: Path, cube: np.ndarray, meta: dict[str, Any] | None = None) -> None:
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning

    meta = meta or {}
    bands, rows, cols = cube.shape
    dtype = _widened(cube.dtype, "tiff")
    options: dict[str, Any] = {}
    if "crs" in meta:
        options["crs"] = CRS.from_wkt(meta["crs"])
    if "transform" in meta:
        options["transform"] = Affine(*(float(v) for v in meta["transform"]))
    if "nodata" in meta:
        options["nodata"] = number_from_json(meta["nodata"])
    with atomic_path(path, suffix=path.suffix) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(tmp, "w", driver="GTiff", width=cols, height=rows, count=bands,
                           dtype=dtype.name, **options) as dst:
            dst.write(cube.astype(dtype.newbyteorder("="), copy=False))
            for band, text in enumerate(meta.get("descriptions", []), 1):
                if text:
                    dst.set_band_description(band, str(text))
            if meta.get("tags"):
                dst.update_tags(**{str(k): str(v) for k, v in meta["tags"].items()})
            for band, tags in enumerate(meta.get("band_tags", []), 1):
                if tags:
                    dst.update_tags(band, **{str(k): str(v) for k, v in tags.items()})
            for key in ("scales", "offsets", "units"):
                if key in meta:
                    if len(meta[key]) != bands:
                        raise ValueError(f"{len(meta[key])} {key} for {bands} bands")
                    setattr(dst, key, tuple(meta[key]))


def _envi_type(dtype: np.dtype) -> int:
    code = f"{dtype.kind}{dtype.itemsize}"
    for number, name in ENVI_TYPES.items():
        if name == code:
            return number
    raise ValueError(f"no ENVI data type for {dtype}")


def _write_envi(path: Path, cube: np.ndarray, meta: dict[str, Any] | None = None) -> None:
    """ENVI header at ``path``, data file beside it (``.img``), in the input's interleave and
    byte order and with its header fields when ``meta`` has them (BSQ, little-endian)."""
    meta = meta or {}
    bands, rows, cols = cube.shape
    interleave = meta.get("interleave", "bsq")
    order = int(meta.get("byte_order", 0))
    if interleave not in _FROM_BSQ or order not in (0, 1):
        raise ValueError(f"interleave {interleave!r}, byte order {order}")
    dtype = _widened(cube.dtype, "envi").newbyteorder("<" if order == 0 else ">")
    layout = {"samples": str(cols), "lines": str(rows), "bands": str(bands),
              "header offset": "0", "data type": str(_envi_type(dtype)),
              "interleave": interleave, "byte order": str(order)}
    fields = [(str(k), str(v)) for k, v in meta.get("fields", [])] or [
        ("description", "{hsicomp cube}"), ("samples", ""), ("lines", ""), ("bands", ""),
        ("header offset", ""), ("file type", "ENVI Standard"), ("data type", ""),
        ("interleave", ""), ("byte order", "")]
    lines = ["ENVI"]
    for key, value in fields:
        lines.append(f"{key} = {layout.pop(key.lower(), value)}")
    lines += [f"{key} = {value}" for key, value in layout.items()]
    check_output(path)  # before the data file, so a refused header leaves nothing behind
    data = np.ascontiguousarray(cube.transpose(_FROM_BSQ[interleave]), dtype=dtype)
    if data.dtype == np.dtype("<u2"):
        write_bsq(path.with_suffix(ENVI_DATA_SUFFIX), data)
    else:
        atomic_write_bytes(path.with_suffix(ENVI_DATA_SUFFIX), data.tobytes())
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_hdf5(path: Path, array: np.ndarray, dataset: str,
                meta: dict[str, Any] | None = None) -> None:
    import h5py

    meta = meta or {}
    with atomic_path(path, suffix=path.suffix) as tmp, h5py.File(tmp, "w") as f:
        obj = f.create_dataset(dataset, data=array)
        for target, key in ((obj.attrs, "attrs"), (f.attrs, "file_attrs")):
            for name, value in _attrs_from_json(meta.get(key, {})).items():
                target[name] = value


def _line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
