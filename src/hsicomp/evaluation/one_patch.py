"""The data of the one-patch figures, read from what the evaluation wrote: the bits each
codec spent on every band of a test patch (the band-bits CSVs of its encode jobs) and the
patch decoded again from its verified bitstream. Nothing is encoded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hsicomp.codecs import get_codec
from hsicomp.data.datasets import read_band_table
from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import bits_per_sample, compare, format_value
from hsicomp.io.container import unpack
from hsicomp.io.manifest import PatchRecord, pick_test_patch, read_test_patch
from hsicomp.io.table import read_table, write_table

#: Columns of the band-bits CSV an encode job writes beside its bitstreams (no rows for a
#: codec that does not attribute its bits to bands).
BAND_BITS_COLUMNS = ["patch_id", "band", "bits"]
#: Columns of the per-band rate CSV written by ``band-rates``.
BAND_RATE_COLUMNS = ["codec", "model", "patch_id", "delta", "band", "wavelength_nm", "bits",
                     "bpppc_band"]


def write_band_bits(path: Path, rows: list[tuple[str, np.ndarray | None]]) -> None:
    """Write the band-bits CSV of (patch id, bits of every band or None) pairs atomically."""
    write_table(path, ({"patch_id": patch_id, "band": band, "bits": int(b)}
                       for patch_id, bits in rows if bits is not None
                       for band, b in enumerate(bits)), BAND_BITS_COLUMNS)


def _patch_band_bits(files: list[Path], patch_id: str, name: str) -> np.ndarray:
    """The bits of every band of ``patch_id`` from the band-bits CSVs of one evaluated point."""
    bits: dict[int, int] = {}
    reported = False
    for path in files:
        table = read_table(path, BAND_BITS_COLUMNS, what="band-bits file", exact=True)
        for line, row in enumerate(table, start=2):
            reported = True
            if row["patch_id"] == patch_id:
                try:
                    bits[int(row["band"])] = int(row["bits"])
                except ValueError:
                    raise HsicompError(f"{path}:{line}: malformed row") from None
    if not reported:
        raise HsicompError(f"codec {name} does not report per-band bits")
    if not bits:
        raise HsicompError(f"codec {name}: no band bits of patch {patch_id} in "
                           f"{', '.join(map(str, files))}")
    if sorted(bits) != list(range(len(bits))):
        raise HsicompError(f"codec {name}: the band bits of patch {patch_id} are incomplete")
    return np.array([bits[b] for b in range(len(bits))], dtype=np.int64)


def band_rates(manifest: Path, sources: dict[str, dict], delta: int,
               patch_id: str | None = None) -> list[dict]:
    """Rows of :data:`BAND_RATE_COLUMNS` for one test patch: per codec label, the bits of
    every band read from the band-bits CSVs its encode jobs wrote.

    ``sources``: label -> {"model": the {model} evaluated, "files": band-bits CSVs of every
    shard}. ``bpppc_band`` is bits / (rows x cols); ``wavelength_nm`` comes from the
    dataset's band table (empty when it has none).
    """
    manifest = Path(manifest)
    wavelengths = read_band_table(manifest.parent)
    rec = pick_test_patch(manifest, patch_id)
    rows = []
    for label, source in sources.items():
        bits = _patch_band_bits([Path(f) for f in source["files"]], rec.patch_id, label)
        if bits.shape != (rec.bands,):
            raise HsicompError(f"codec {label} reported {bits.size} band bit counts for "
                               f"{rec.bands} bands")
        for band, b in enumerate(bits.tolist()):
            rows.append({"codec": label, "model": source["model"], "patch_id": rec.patch_id,
                         "delta": delta, "band": band, "wavelength_nm": wavelengths.get(band, ""),
                         "bits": b, "bpppc_band": b / (rec.rows * rec.cols)})
    return rows


def write_band_rates(manifest: Path, sources: dict[str, dict], delta: int, out_csv: Path,
                     patch_id: str | None = None) -> list[dict]:
    """:func:`band_rates` written atomically to ``out_csv``."""
    rows = band_rates(manifest, sources, delta, patch_id)
    write_table(out_csv, rows, BAND_RATE_COLUMNS, partial(format_value, digits=8))
    return rows


@dataclass
class DecodedPatch:
    """A test patch and its reconstruction from a verified bitstream, with its metrics."""

    record: PatchRecord
    original: np.ndarray
    decoded: np.ndarray
    metrics: dict
    lossy: bool


def decode_patch(manifest: Path, bitstreams: list[Path], codec: str, params: dict, delta: int,
                 patch_id: str | None = None, peak: float | None = None) -> DecodedPatch:
    """Decode one test patch's bitstream (``<patch_id>.hsic`` in one of the ``bitstreams``
    folders of an evaluated point) and compare it with the original.

    Raises HsicompError when no folder holds the file, when the file was coded at another
    delta, or when the reconstruction breaks the error bound (a lossy codec has none).
    """
    manifest = Path(manifest)
    rec = pick_test_patch(manifest, patch_id)
    found = [Path(d) / f"{rec.patch_id}.hsic" for d in bitstreams
             if (Path(d) / f"{rec.patch_id}.hsic").is_file()]
    if not found:
        raise HsicompError(f"no bitstream {rec.patch_id}.hsic in "
                           f"{', '.join(map(str, bitstreams)) or 'no folder'}")
    path = found[0]
    data = path.read_bytes()
    header = unpack(data, str(path))[0]
    if header.delta != delta:
        raise HsicompError(f"{path}: coded at delta {header.delta}, not {delta}")
    decoder = get_codec(codec, params)
    decoded = decoder.decode(data, str(path))
    original = read_test_patch(manifest, rec)
    m = compare(original, decoded, peak or (1 << rec.bit_depth) - 1)
    m["bpppc"] = bits_per_sample(len(data), rec.shape)
    if not decoder.lossy and m["max_abs_error"] > delta:
        raise HsicompError(f"{path}: decoded max error {m['max_abs_error']} > delta={delta}")
    return DecodedPatch(rec, original, decoded, m, decoder.lossy)


@dataclass
class Signature:
    """One codec's reconstruction of a pixel's spectrum, at the point nearest the asked rate."""

    label: str
    model: str
    spectrum: np.ndarray
    metrics: dict


def nearest_point(rd_rows: list[dict], dataset: str, label: str, rate: float) -> str | None:
    """The {model} of ``label``'s point in ``dataset`` whose mean rate is nearest ``rate``
    (in log rate), among its lossy points; None when it has none."""
    rows = [r for r in rd_rows if r["dataset"] == dataset and r["codec"] == label
            and np.isfinite(r["psnr"]) and r["bpppc"] > 0]
    if not rows:
        return None
    return min(rows, key=lambda r: abs(np.log(r["bpppc"] / rate)))["model"]


def spectral_signatures(manifest: Path, rd_rows: list[dict], dataset: str,
                        sources: dict[str, dict], rate: float, patch_id: str | None = None,
                        pixel: tuple[int, int] | None = None,
                        peak: float | None = None) -> tuple[np.ndarray, list[Signature]]:
    """The original spectrum of one pixel of a test patch and, per codec label, its
    reconstruction decoded from the verified bitstream of the label's point nearest
    ``rate`` bits per sample (chosen from ``rd_rows``, the rd_all table).

    ``sources``: label -> {"codec": registry name, "models": {model: {"params": decoder
    parameters, "bitstreams": the point's bitstream folders}}}. ``pixel`` (row, col)
    defaults to the patch's centre.
    """
    rec = pick_test_patch(Path(manifest), patch_id)
    row, col = pixel if pixel is not None else (rec.rows // 2, rec.cols // 2)
    if not (0 <= row < rec.rows and 0 <= col < rec.cols):
        raise HsicompError(f"pixel ({row}, {col}) is outside the {rec.rows}x{rec.cols} patch")
    original, signatures = None, []
    for label, source in sources.items():
        model = nearest_point(rd_rows, dataset, label, rate)
        if model is None:
            raise HsicompError(f"codec {label}: no lossy point in dataset {dataset}")
        point = source["models"].get(model)
        if point is None:
            raise HsicompError(f"codec {label}: no bitstreams given for model {model}")
        patch = decode_patch(manifest, [Path(d) for d in point["bitstreams"]], source["codec"],
                             point["params"], 0, rec.patch_id, peak)
        original = patch.original[:, row, col]
        signatures.append(Signature(label, model, patch.decoded[:, row, col], patch.metrics))
    if original is None:
        original = read_test_patch(Path(manifest), rec)[:, row, col]
    return original, signatures
