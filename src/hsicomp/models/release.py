"""The LineRWKV checkpoints published by the method's authors, and how to recognise them.

The four sizes were trained by the authors on HySpecNet-11k (hard split) and published in
their git repository; the project fetches them from there (``checkpoints/linerwkv-release/``
are DVC imports pinned to :data:`COMMIT`) and converts them with
``hsicomp import-checkpoint --release SIZE``, which checks the file against this table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hsicomp.errors import HsicompError

REPOSITORY = "https://github.com/diegovalsesia/linerwkv"
COMMIT = "bb70e54c92e1fe2e70e85ef579187fb99124f1e1"


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One published checkpoint: where it is, its bytes' sha256 and what it holds."""

    path: str  # in the repository at COMMIT
    size_bytes: int
    sha256: str
    parameters: int
    weights_sha256: str  # hsicomp.models.checkpoint.model_hash of the converted model


RELEASE: dict[str, ReleasedCheckpoint] = {
    "XS": ReleasedCheckpoint(
        "Results/linerwkv/xs/rwkv-final.pth", 151_659,
        "f1f9e7bf66666446392951123966d4c4d2da2201482c90336111a003aefa2c82", 30_466,
        "e413a50b2d031d26f3dbc6f6104cca854cb2e37c066107a89d6b3d67edf794ec"),
    "S": ReleasedCheckpoint(
        "Results/linerwkv/s/rwkv-final.pth", 572_587,
        "5952dc0f7a7941da6da3370febd7228238f394fc682e9f7401059d6ee4395d89", 135_042,
        "41842c66827c79f7cb1162b0d9cfbbf6de2b1a5b82b467bfdce83afefc3cc94a"),
    "M": ReleasedCheckpoint(
        "Results/linerwkv/m/rwkv-final.pth", 1_207_867,
        "8294079a43459dbd14f73f9b82a86c13c46f7148c3a95c7ab14cbb71454b237e", 286_082,
        "823f9177cead87fa6a483041654542d76ad2e2c0b8fd88cc8495c9a6a7c18f40"),
    "L": ReleasedCheckpoint(
        "Results/linerwkv/l/rwkv-final.pth", 3_690_499,
        "094eafe1b193f5ba32b2ead0bd2876fe3a34808779b21cb0b8f166af669eb8d0", 900_290,
        "3cfc69406b65c488aa4248306e90bfdb898ea402bfca2ae98a217ad838c22a8e"),
}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_release(path: str | Path, size: str) -> ReleasedCheckpoint:
    """The published checkpoint of ``size``, after checking that ``path`` holds exactly it."""
    if size not in RELEASE:
        raise HsicompError(f"no released LineRWKV {size!r} (released: {', '.join(RELEASE)})")
    release = RELEASE[size]
    digest = file_sha256(path)
    if digest != release.sha256:
        raise HsicompError(f"{path}: not the released LineRWKV {size} checkpoint (sha256 "
                           f"{digest[:16]}..., the release is {release.sha256[:16]}...)")
    return release
