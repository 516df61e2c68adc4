"""Per-shard evaluation: encode the test patches of a shard, then decode, check and measure them."""

from __future__ import annotations

import hashlib
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from hsicomp.codecs import Codec, get_codec
from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import PATCH_COLUMNS, bits_per_sample, compare, format_value
from hsicomp.evaluation.one_patch import write_band_bits
from hsicomp.io.atomic import atomic_write_bytes
from hsicomp.io.container import unpack
from hsicomp.io.manifest import PatchRecord, read_manifest, read_test_patch, select_shard
from hsicomp.io.table import read_table, write_table
from hsicomp.progress import progress_bar

TIMING_COLUMNS = ["patch_id", "bytes", "encode_s"]
#: How the shard CSVs write values: floats with 10 significant digits.
_FORMAT = partial(format_value, digits=10)


def _set_threads(threads: int) -> None:
    """Limit torch's intra-op threads, only when torch is already loaded."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _shard_records(manifest: Path, shard: int, shards: int) -> list[PatchRecord]:
    return select_shard(read_manifest(manifest), shard, shards)


def display_name(codec: str, label: str | None) -> str:
    """How messages name a codec: its label, with the registry name when they differ."""
    return codec if label in (None, codec) else f"{label} ({codec})"


def _make_codec(codec: str, params: dict, label: str | None) -> Codec:
    """The codec object; a parameter error names the configuration entry too."""
    try:
        return get_codec(codec, params)
    except HsicompError as exc:
        if label in (None, codec):
            raise
        raise HsicompError(f"codec entry {label}: {exc}") from None


def encode_shard(manifest: Path, shard: int, shards: int, codec_name: str, params: dict,
                 delta: int, out_dir: Path, timings_csv: Path, threads: int = 1,
                 label: str | None = None, progress: bool = True,
                 band_bits_csv: Path | None = None) -> int:
    """Encode the shard's test patches to ``out_dir/<patch_id>.hsic``; return how many.

    ``codec_name`` is the registry name; ``label`` (default ``codec_name``) names the
    configuration entry in messages. Once every patch is written, writes ``timings_csv``
    (patch_id, bytes, encode_s) and ``band_bits_csv`` (patch_id, band, bits: the bits the
    codec attributes to each band, see :data:`~hsicomp.evaluation.one_patch.BAND_BITS_COLUMNS`;
    no rows when the codec reports none).
    """
    manifest, out_dir = Path(manifest), Path(out_dir)
    records = _shard_records(manifest, shard, shards)
    codec = _make_codec(codec_name, params, label)
    name = display_name(codec_name, label)
    if not codec.supports(delta):
        hint = " (lossy codec: delta 0 = no bound)" if codec.lossy else ""
        raise HsicompError(f"codec {name} does not support delta={delta}{hint}")
    _set_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings, band_bits = [], []
    for rec in progress_bar(records, desc=f"encode {name} d{delta}", unit="patch",
                            enabled=progress):
        cube = read_test_patch(manifest, rec)
        start = time.perf_counter()
        data = codec.encode(cube, delta, rec.bit_depth)
        seconds = time.perf_counter() - start
        atomic_write_bytes(out_dir / f"{rec.patch_id}.hsic", data)
        timings.append({"patch_id": rec.patch_id, "bytes": len(data), "encode_s": seconds})
        band_bits.append((rec.patch_id, getattr(codec, "last_stats", {}).get("band_bits")))
    if band_bits_csv is not None:
        write_band_bits(band_bits_csv, band_bits)
    write_table(timings_csv, timings, TIMING_COLUMNS, _FORMAT)
    return len(records)


def _read_timings(path: Path) -> dict[str, float]:
    table = read_table(path, TIMING_COLUMNS, what="timings file", exact=True)
    try:
        return {row["patch_id"]: float(row["encode_s"]) for row in table}
    except ValueError:
        raise HsicompError(f"{path}: malformed encode_s value") from None


def _verify_patch(path: Path, rec: PatchRecord, original: np.ndarray, codec: Codec,
                  delta: int, peak: float, label: str | None = None) -> tuple[dict, float, bytes]:
    """Decode one bitstream and check it; return (metrics, decode seconds, the file's bytes).

    Every file must decode to the original's shape within the bit depth; files of a
    near-lossless codec must also stay within ``delta`` (equal the original at delta 0),
    files of a lossy codec (header flag, no error bound) are only measured.
    """
    what = f"{path}: {display_name(codec.name, label)} " + ("lossy" if codec.lossy else
                                                       f"delta={delta}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HsicompError(f"{what} bitstream missing") from None
    source = str(path)
    try:
        header = unpack(data, source)[0]
    except HsicompError as exc:
        raise HsicompError(f"{what} unreadable: {str(exc).removeprefix(source + ': ')}") from None
    if header.delta != delta:
        raise HsicompError(f"{what} file header says delta={header.delta}")
    if header.lossy != codec.lossy:
        raise HsicompError(f"{what} file header says {'' if header.lossy else 'not '}lossy")
    if header.bit_depth != rec.bit_depth:
        raise HsicompError(f"{what} file header says bit depth {header.bit_depth}, the patch "
                           f"has {rec.bit_depth}")
    start = time.perf_counter()
    try:
        decoded = codec.decode(data, source)
    except Exception as exc:  # HsicompError, or a codec library rejecting a damaged payload
        reason = str(exc).removeprefix(source + ": ") if isinstance(exc, HsicompError) \
            else f"{type(exc).__name__}: {exc}"
        raise HsicompError(f"{what} decode failed: {reason}") from None
    seconds = time.perf_counter() - start
    if decoded.shape != original.shape:
        got = "x".join(map(str, decoded.shape))
        raise HsicompError(f"{what} decoded shape {got} != original {rec.bands}x{rec.rows}x"
                           f"{rec.cols}")
    if decoded.dtype != np.uint16 or int(decoded.max()) >= 1 << rec.bit_depth:
        raise HsicompError(f"{what} decoded samples are not {rec.bit_depth}-bit unsigned")
    m = compare(original, decoded, peak)
    if codec.lossy:
        return m, seconds, data
    if delta == 0 and not (decoded == original).all():
        raise HsicompError(f"{what} decoded cube differs from the original "
                           f"(max error {m['max_abs_error']})")
    if m["max_abs_error"] > delta:
        raise HsicompError(f"{what} decoded max error {m['max_abs_error']} > {delta}")
    return m, seconds, data


def verify_shard(manifest: Path, shard: int, shards: int, bitstreams: Path, timings_csv: Path,
                 dataset: str, codec_name: str, model: str, delta: int, params: dict,
                 peak: float, out_csv: Path, label: str | None = None,
                 progress: bool = True) -> list[dict]:
    """Decode and check every bitstream of the shard; write per-patch metrics to ``out_csv``.

    ``codec_name`` is the registry name; the CSV's ``codec`` column holds ``label`` (default
    ``codec_name``), the name of the configuration entry. Rows of a lossy codec have an empty
    ``delta`` and ``lossy`` true. Each row records the bitstream's path, size and sha256, so
    that ``aggregate`` can check the files are still the ones verified. Raises
    :class:`HsicompError` on the first failed patch, before anything is written.
    """
    manifest, bitstreams = Path(manifest), Path(bitstreams)
    records = _shard_records(manifest, shard, shards)
    timings = _read_timings(Path(timings_csv))
    codec = _make_codec(codec_name, params, label)
    rows = []
    desc = f"verify {display_name(codec_name, label)} d{delta}"
    for rec in progress_bar(records, desc=desc, unit="patch", enabled=progress):
        path = bitstreams / f"{rec.patch_id}.hsic"
        if rec.patch_id not in timings:
            raise HsicompError(f"{timings_csv}: no encode time for patch {rec.patch_id}")
        original = read_test_patch(manifest, rec)
        m, decode_s, data = _verify_patch(path, rec, original, codec, delta, peak, label)
        n_bytes = len(data)
        rows.append({
            "dataset": dataset, "codec": label or codec_name, "model": model,
            "delta": "" if codec.lossy else delta, "lossy": codec.lossy,
            "patch_id": rec.patch_id, "bands": rec.bands, "rows": rec.rows, "cols": rec.cols,
            "bytes": n_bytes, "bpppc": bits_per_sample(n_bytes, rec.shape),
            **m,
            "encode_s": timings[rec.patch_id], "decode_s": decode_s, "roundtrip_ok": True,
            "file": str(path), "sha256": hashlib.sha256(data).hexdigest(),
        })
    write_table(out_csv, rows, PATCH_COLUMNS, _FORMAT)
    return rows
