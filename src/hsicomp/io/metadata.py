"""The metadata block of a .hsic file: what the input file said besides its samples.

Encoding records it; decoding to the same format writes it back, so the user gets their
file back, not just its samples. Block layout: one byte :data:`METADATA_VERSION`, then a
raw LZMA2 stream (dictionary :data:`MAX_JSON_BYTES`) of a UTF-8 JSON object of at most
:data:`MAX_JSON_BYTES` once unpacked (the block itself is at most
:data:`~hsicomp.io.container.MAX_METADATA_BYTES`). Keys, all optional:

``format``
    the input's format: ``raw``, ``npy``, ``tiff``, ``envi`` or ``hdf5``.
``dtype``
    the input's NumPy sample type (``numpy.dtype.str``) when it was not little-endian uint16.
``layout``
    ``bil`` (rows, bands, cols) or ``bip`` (rows, cols, bands): the axis order of a ``.npy``
    or HDF5 input that was not (bands, rows, cols).
``nodata``
    ``{"value": v, "samples": n}``: the input's samples equal to ``v`` (``"nan"`` for NaN)
    were nodata, ``n`` of them. When ``v`` cannot be coded (negative, NaN, above the bit
    depth) those samples were coded as 0 and ``"mask"`` holds their positions (base64 of
    the zlib-compressed :func:`numpy.packbits` of the (bands, rows, cols) mask).
``tiff``, ``envi``, ``hdf5``
    the format's own metadata (see :mod:`hsicomp.io.cubeio`).

Only JSON is ever parsed (never pickle), and every size is bounded before it is allocated.
"""

from __future__ import annotations

import base64
import binascii
import json
import lzma
import math
import zlib
from typing import Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.container import MAX_METADATA_BYTES

#: Version of the metadata block layout (its first byte).
METADATA_VERSION = 1
#: Largest JSON text a metadata block may inflate to (1 MiB).
MAX_JSON_BYTES = 1 << 20
#: Value a nodata sample is coded as when its own value cannot be coded.
NODATA_FILL = 0
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "dict_size": MAX_JSON_BYTES}]


def dump_metadata(meta: dict[str, Any], source: str = "input") -> bytes:
    """The metadata block of ``meta`` (empty bytes for an empty dict)."""
    if not meta:
        return b""
    text = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    raw = text.encode("utf-8")
    packed = lzma.compress(raw, format=lzma.FORMAT_RAW, filters=[
        {**_LZMA_FILTERS[0], "preset": 9 | lzma.PRESET_EXTREME}])
    block = bytes([METADATA_VERSION]) + packed
    if len(raw) > MAX_JSON_BYTES or len(block) > MAX_METADATA_BYTES:
        raise HsicompError(f"{source}: metadata too large to carry ({len(raw)} bytes of JSON, "
                           f"at most {MAX_JSON_BYTES})")
    return block


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_metadata(block: bytes, source: str = "input") -> dict[str, Any]:
    """Parse a metadata block (empty bytes: no metadata) with one-line errors."""
    if not block:
        return {}
    if block[0] != METADATA_VERSION:
        raise HsicompError(f"{source}: unsupported metadata version {block[0]} (this hsicomp "
                           f"reads version {METADATA_VERSION})")
    unpacker = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    try:
        raw = unpacker.decompress(block[1:], MAX_JSON_BYTES + 1)
    except lzma.LZMAError:
        raise HsicompError(f"{source}: corrupt metadata (not an LZMA2 stream)") from None
    if len(raw) > MAX_JSON_BYTES:
        raise HsicompError(f"{source}: corrupt metadata (more than {MAX_JSON_BYTES} bytes)")
    if not unpacker.eof or unpacker.unused_data:
        raise HsicompError(f"{source}: corrupt metadata (truncated or trailing bytes)")
    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise HsicompError(f"{source}: corrupt metadata (not UTF-8 JSON)") from None
    if not isinstance(meta, dict):
        raise HsicompError(f"{source}: corrupt metadata (not a JSON object)")
    return meta


def number_to_json(value: float | int) -> float | int | str:
    """A number as JSON holds it: integers as ints, NaN and infinities as text."""
    value = float(value) if not isinstance(value, int | np.integer) else int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    return value


def number_from_json(value: Any) -> float | int:
    """The inverse of :func:`number_to_json`."""
    if isinstance(value, str):
        if value not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad number {value!r}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"bad number {value!r}")
    return value


def nodata_mask(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``data`` equals ``nodata`` (NaN matches NaN); all False when it is None."""
    if nodata is None:
        return np.zeros(data.shape, bool)
    if isinstance(nodata, float) and math.isnan(nodata):
        return np.isnan(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    return data == nodata


def encode_mask(mask: np.ndarray) -> str:
    """Base64 of the zlib-compressed packed bits of a boolean mask (C order)."""
    packed = np.packbits(mask.ravel()).tobytes()
    return base64.b64encode(zlib.compress(packed, 9)).decode("ascii")


def decode_mask(text: Any, shape: tuple[int, ...], source: str) -> np.ndarray:
    """The boolean mask of ``shape`` :func:`encode_mask` wrote; bounded by ``shape``."""
    count = math.prod(shape)
    expected = (count + 7) // 8
    try:
        packed = base64.b64decode(text.encode("ascii"), validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, expected + 1)
    except (AttributeError, UnicodeError, binascii.Error, zlib.error):
        raise HsicompError(f"{source}: corrupt metadata (nodata mask)") from None
    if len(raw) != expected or not inflater.eof or inflater.unused_data:
        raise HsicompError(f"{source}: corrupt metadata (nodata mask of the wrong size)")
    bits = np.unpackbits(np.frombuffer(raw, np.uint8), count=count)
    return bits.astype(bool).reshape(shape)


def apply_nodata(array: np.ndarray, nodata: float | None,
                 bit_depth: int) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Mark ``array``'s nodata samples; return the array to code and the ``nodata`` entry.

    Nodata samples keep their value when it can be coded (an integer in 0..2**bit_depth-1);
    otherwise they become :data:`NODATA_FILL` and the entry records their mask, so decoding
    gives them back exactly.
    """
    if nodata is None:
        return array, None
    mask = nodata_mask(array, nodata)
    count = int(mask.sum())
    entry: dict[str, Any] = {"value": number_to_json(nodata), "samples": count}
    codeable = float(nodata).is_integer() and 0 <= nodata < 1 << bit_depth
    if count and not codeable:
        entry["mask"] = encode_mask(mask)
        array = array.copy()
        array[mask] = NODATA_FILL
    return array, entry


def restore_samples(cube: np.ndarray, meta: dict[str, Any], source: str) -> np.ndarray:
    """The input's samples from a decoded uint16 cube: its sample type (values beyond it,
    which only a lossy decode gives, are clipped), nodata put back."""
    try:
        dtype = np.dtype(meta.get("dtype", "<u2"))
        entry = meta.get("nodata")
        if dtype.kind not in "uif":
            raise ValueError(f"sample type {dtype}")
        top = int(np.iinfo(dtype).max if dtype.kind in "iu" else np.finfo(dtype).max)
        if top < 65535 and cube.size and int(cube.max()) > top:
            cube = np.minimum(cube, top)  # a lossy decode may overshoot the input's type
        values = cube.astype(dtype)
        if isinstance(entry, dict) and "mask" in entry:
            mask = decode_mask(entry["mask"], cube.shape, source)
            value = number_from_json(entry["value"])
            if dtype.kind != "f" and not float(value).is_integer():
                raise ValueError(f"nodata {value} in {dtype}")
            values[mask] = value
    except (TypeError, ValueError, OverflowError) as exc:
        raise HsicompError(f"{source}: corrupt metadata ({exc})") from None
    return values


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _crs_name(wkt: str) -> str:
    try:
        from rasterio.crs import CRS

        return CRS.from_wkt(wkt).to_string()
    except Exception:  # noqa: BLE001 - any unreadable CRS is shown as its text
        return _short(wkt)


def _listing(items: list, what: str) -> str:
    shown = [i for i in items if i]
    if not shown:
        return f"{len(items)} {what}"
    return f"{len(items)} {what} (first: {_short(shown[0], 50)!r})"


def describe_metadata(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """Readable (name, value) rows of parsed metadata, for ``hsicomp info``."""
    rows: list[tuple[str, str]] = []
    if "format" in meta:
        rows.append(("metadata_format", str(meta["format"])))
    if "dtype" in meta:
        rows.append(("sample_type", str(np.dtype(meta["dtype"]))
                     + (" (big-endian)" if str(meta["dtype"]).startswith(">") else "")))
    if "layout" in meta:
        rows.append(("layout", f"{meta['layout']} (axis order of the input array)"))
    entry = meta.get("nodata")
    if isinstance(entry, dict):
        how = "positions carried as a mask" if "mask" in entry else "coded as they are"
        count = entry.get("samples")
        rows.append(("nodata", f"{entry.get('value')} "
                               + (f"({count} samples, {how})" if count else "(no samples)")))
    tiff = meta.get("tiff") or {}
    if "crs" in tiff:
        rows.append(("crs", _crs_name(tiff["crs"])))
    if "transform" in tiff:
        rows.append(("transform", ", ".join(f"{v:.12g}" for v in tiff["transform"])))
    if "nodata" in tiff:
        rows.append(("tiff_nodata", str(tiff["nodata"])))
    if "descriptions" in tiff:
        rows.append(("band_descriptions", _listing(tiff["descriptions"], "bands")))
    if tiff.get("tags"):
        rows.append(("tags", _short(", ".join(f"{k}={v}" for k, v in tiff["tags"].items()))))
    if tiff.get("band_tags"):
        keys = sorted({k for tags in tiff["band_tags"] for k in tags})
        rows.append(("band_tags", _short(", ".join(keys))))
    for key in ("scales", "offsets", "units"):
        if key in tiff:
            rows.append((f"band_{key}", _short(", ".join(map(str, tiff[key][:4]))
                                             + (", ..." if len(tiff[key]) > 4 else ""))))
    envi = meta.get("envi") or {}
    if "interleave" in envi:
        rows.append(("envi_interleave", str(envi["interleave"])))
    for key, value in envi.get("fields", []):
        rows.append((f"envi[{key}]", _short(value)))
    h5 = meta.get("hdf5") or {}
    if "dataset" in h5:
        rows.append(("hdf5_dataset", str(h5["dataset"])))
    for where in ("attrs", "file_attrs"):
        if h5.get(where):
            rows.append((f"hdf5_{where}", _short(", ".join(h5[where]))))
    return rows
