"""The per-dataset manifest: one CSV row per prepared patch."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.bsq import read_bsq
from hsicomp.io.table import read_table, write_table


@dataclass
class PatchRecord:
    """One prepared patch: where it is stored and what the conversion did to it.

    ``file`` is relative to the manifest's folder: a ``.bsq`` file (uint16 LE, band, row,
    col) or an ``.h5`` file holding the patch as dataset ``patches/<patch_id>``.
    ``clipped_low``/``clipped_high`` count samples clipped to 0 / to 2**bit_depth - 1;
    ``nodata`` counts nodata samples (stored as 0). ``sha256`` is taken over the patch's
    BSQ bytes, whatever the storage.
    """

    patch_id: str
    split: str
    bands: int
    rows: int
    cols: int
    bit_depth: int
    file: str
    clipped_low: int
    clipped_high: int
    nodata: int
    sha256: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.bands, self.rows, self.cols)

    @property
    def samples(self) -> int:
        return self.bands * self.rows * self.cols


FIELDS = [f.name for f in fields(PatchRecord)]
_INT_FIELDS = {f.name for f in fields(PatchRecord) if f.type in ("int", int)}


def write_manifest(path: str | os.PathLike, records: list[PatchRecord]) -> None:
    """Write the manifest CSV atomically."""
    write_table(path, (asdict(rec) for rec in records), FIELDS)


def read_manifest(path: str | os.PathLike) -> list[PatchRecord]:
    """Read a manifest CSV; raise :class:`HsicompError` naming the file when it is malformed."""
    records = []
    for line, row in enumerate(read_table(path, FIELDS, what="manifest", exact=True), start=2):
        try:
            values = {k: int(v) if k in _INT_FIELDS else v for k, v in row.items()}
        except ValueError:
            raise HsicompError(f"{path}:{line}: malformed row") from None
        records.append(PatchRecord(**values))
    return records


def select_shard(records: list[PatchRecord], shard: int, shards: int) -> list[PatchRecord]:
    """The test patches of shard ``shard`` (0-based) of ``shards``: every shards-th patch."""
    if not 0 <= shard < shards:
        raise HsicompError(f"shard {shard} out of range for {shards} shards")
    return [r for r in records if r.split == "test"][shard::shards]


def pick_test_patch(manifest: str | os.PathLike, patch_id: str | None = None) -> PatchRecord:
    """The record of test patch ``patch_id`` (default: the first test patch)."""
    tests = [r for r in read_manifest(manifest) if r.split == "test"]
    if not tests:
        raise HsicompError(f"{manifest}: no test patches")
    if patch_id is None:
        return tests[0]
    for rec in tests:
        if rec.patch_id == patch_id:
            return rec
    raise HsicompError(f"{manifest}: no test patch {patch_id!r}")


def read_test_patch(manifest: str | os.PathLike, rec: PatchRecord) -> np.ndarray:
    """The cube (bands, rows, cols) of a test patch, from its BSQ file."""
    return read_bsq(Path(manifest).parent / rec.file, rec.bands, rec.rows, rec.cols)
