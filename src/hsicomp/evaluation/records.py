"""Whether the files of an evaluated shard are still the ones its record describes.

A result never outlives its bitstream: the metrics CSV of a verified shard records each
file's size and sha256, the timings CSV of an encoded shard each file's size. Before
aggregating, the workflow asks :func:`shard_problem` about every shard and has the shards
whose files went missing or changed encoded and verified again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from hsicomp.errors import HsicompError
from hsicomp.io.table import read_table


@dataclass(frozen=True)
class ShardProblem:
    """Why a shard's files no longer match their record."""

    reason: str  #: one line naming the file
    remove: list[str]  #: the shard's outputs to remove, its record last
    stamp: int  #: modification time (ns) of the record the files no longer match


def _bitstream_problem(path: str, size: int, sha256: str | None, since: int,
                       when: str) -> str | None:
    """Why the bitstream ``path`` is not the file recorded ``when`` (verified, encoded), or
    None; the sha256 (if recorded) is compared for files modified after ``since`` (ns)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: missing"
    if st.st_size != size:
        return f"{path}: {st.st_size} bytes, {size} when {when}"
    if sha256 is not None and st.st_mtime_ns > since:
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                return f"{path}: changed since it was {when}"
    return None


def shard_problem(paths: dict[str, str], hash_all: bool = False) -> ShardProblem | None:
    """A ShardProblem when a shard's bitstreams no longer match their record (its metrics
    CSV; before it is verified, its timings CSV), else None.

    ``paths``: the shard's ``bitstreams``, ``timings``, ``band_bits`` and ``metrics`` (see
    :meth:`hsicomp.evaluation.plan.Plan.shard_paths`). ``hash_all``: compare the sha256 of
    every file, not only of those modified after the record.
    """
    bits, timings, metrics = paths["bitstreams"], paths["timings"], paths["metrics"]
    encoded = [bits, paths["band_bits"], timings]
    if os.path.exists(metrics):
        record, when, remove = metrics, "verified", [*encoded, metrics]

        def read(r: dict) -> tuple[str, int, str | None]:
            return r["patch_id"], int(r["bytes"]), r["sha256"]
    elif os.path.exists(timings) and os.path.isdir(bits):
        record, when, remove = timings, "encoded", encoded

        def read(r: dict) -> tuple[str, int, str | None]:
            return r["patch_id"], int(r["bytes"]), None
    else:
        return None
    stamp = os.stat(record).st_mtime_ns
    try:
        files = [read(row) for row in read_table(record)]
    except (HsicompError, KeyError, ValueError):
        if record == metrics:  # or written before metrics recorded checksums: verify again
            return ShardProblem(f"{metrics}: unreadable or without bitstream checksums",
                                [metrics], stamp)
        return ShardProblem(f"{timings}: unreadable", remove, stamp)
    for patch_id, size, sha256 in files:
        reason = _bitstream_problem(f"{bits}/{patch_id}.hsic", size, sha256,
                                    -1 if hash_all else stamp, when)
        if reason:
            return ShardProblem(reason, remove, stamp)
    return None
