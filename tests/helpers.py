"""Shared test helpers: the repository root, the shared data folder, running Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ENMAP_DIR = SHARED / "data" / "enmap-potsdam"
#: A workflow configuration of tiny synthetic cubes, two anchors and two shards.
TINY_CONFIG = {
    "datasets": {"tiny": {"kind": "synthetic", "seed": 5, "bands": 6, "rows": 12, "cols": 10,
                          "bit_depth": 14, "patches": {"train": 1, "val": 1, "test": 3}}},
    "deltas": [0, 2],
    "codecs": {"jpegls": {}, "jpeg2000": {"deltas": [0]}},
    "evaluation": {"shards": 2},
}


def damaged_copies(data: bytes, cuts: tuple[int, ...], flips: int,
                   rng: np.random.Generator) -> list[bytes]:
    """``data`` cut to each length of ``cuts``, then ``flips`` copies of it with one bit
    flipped each (positions, then each bit, drawn from ``rng``)."""
    out = [data[:cut] for cut in cuts]
    for pos in rng.integers(0, len(data), flips):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(bytes(flipped))
    return out


def tool_env() -> dict[str, str]:
    """Environment with this interpreter's bin folder first and DVC analytics off."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def run_snakemake(workdir: Path, *args: str, check: bool = True,
                  timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args]
    proc = subprocess.run(cmd, cwd=workdir, env=tool_env(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def smooth_cube(shape: tuple[int, int, int], bit_depth: int, seed: int,
                noise: float = 0.02) -> np.ndarray:
    """Spectrally and spatially correlated integers filling most of ``bit_depth`` bits."""
    rng = np.random.default_rng(seed)
    bands, rows, cols = shape
    base = np.cumsum(rng.normal(size=(1, rows, cols)), axis=2) \
        + np.cumsum(rng.normal(size=(1, rows, 1)), axis=1)
    profile = np.linspace(0.4, 1.0, bands).reshape(bands, 1, 1)
    x = 0.5 + 0.08 * base * profile + noise * rng.normal(size=shape)
    top = (1 << bit_depth) - 1
    return np.clip(np.rint(x * top), 0, top).astype(np.uint16)


def perturbed_model(size: str, seed: int):
    """A random-init LineRWKV with every parameter perturbed (varied decays, mixes, norms)."""
    import torch

    from hsicomp.models import SIZES, LineRWKV

    torch.manual_seed(seed)
    model = LineRWKV(SIZES[size]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model


#: Test cubes of the gdn codec tests (bands, rows, cols) and their bit depth.
GDN_SHAPE = (5, 13, 19)
GDN_BIT_DEPTH = 12


def gdn_test_config(**changes):
    """A tiny gdn network for ``GDN_SHAPE`` cubes, with ``changes`` to its configuration."""
    from dataclasses import replace

    from hsicomp.models.gdn import TransformCodecConfig

    return replace(TransformCodecConfig(bands=5, spectral_channels=4, hidden_channels=8,
                                        latent_channels=4, stages=2, attention=False),
                   **changes)


def random_gdn_model_file(path: Path, config, seed: int = 0, setup=None) -> Path:
    """Write a gdn-family model with random weights (``seed``), normalised for a smooth cube
    of seed ``seed``, and frozen tables; ``setup(model)`` may change it before freezing."""
    import torch

    from hsicomp.models.checkpoint import save_gdn_model
    from hsicomp.models.gdn import TransformCodec, band_statistics

    torch.manual_seed(seed)
    model = TransformCodec(config).eval()
    if setup is not None:
        with torch.no_grad():
            setup(model)
    model.set_normalization(*band_statistics(
        smooth_cube((config.bands, *GDN_SHAPE[1:]), GDN_BIT_DEPTH, seed)))
    model.entropy.freeze()
    save_gdn_model(path, model)
    return path


def one_line_error(func, *args) -> str:
    """The message of the HsicompError ``func(*args)`` raises, checked to be one line."""
    from hsicomp.errors import HsicompError

    with pytest.raises(HsicompError) as info:
        func(*args)
    text = str(info.value)
    assert "\n" not in text
    return text


def prepare_synthetic(folder: Path, spec: dict) -> Path:
    """A prepared synthetic dataset in ``folder / "data"`` (``hsicomp prepare``)."""
    import json

    from hsicomp import cli

    out = folder / "data"
    assert cli.main(["prepare", "--spec", json.dumps({"kind": "synthetic", **spec}),
                     "--out", str(out), "--no-progress"]) == 0
    return out


def version1_file(data: bytes) -> bytes:
    """The version-1 form of a version-2 .hsic file: no check value, version byte 1, crc32
    recomputed (what hsicomp wrote before files carried a check value)."""
    import struct
    import zlib

    body = bytearray(data[:-8])
    body[4] = 1
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def write_config(path: Path, config: dict) -> Path:
    """Write a workflow configuration as YAML; return its path."""
    import yaml

    path.write_text(yaml.safe_dump(config))
    return path


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file as dictionaries."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def dvc(cwd: Path, *args: str) -> str:
    """Run dvc in ``cwd`` (it must succeed); return its output."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=tool_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def git(cwd: Path, *args: str) -> None:
    """Run git in ``cwd`` with a fixed identity (it must succeed)."""
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                   check=True, capture_output=True)


#: The EnMAP tiles of the two crops of ../shared/docs/anchors.md (x, y of each tile).
ENMAP_CROPS = {"se_128x64": [(x, y) for y in (64, 96, 128, 160) for x in (160, 192)],
               "mid_64x64": [(x, y) for x in (96, 128) for y in (96, 128)]}


def enmap_crop(name: str):
    """One of the two real EnMAP crops (202 bands, uint16), or a pytest skip without the
    shared tiles."""
    from hsicomp.data.datasets import read_geotiff, to_uint

    tiles = [ENMAP_DIR / f"enmap_potsdam_tile_{x}_{y}.tif" for x, y in ENMAP_CROPS[name]]
    if not all(t.is_file() for t in tiles):
        pytest.skip(f"no EnMAP tiles in {ENMAP_DIR}")
    data, nodata = read_geotiff(tiles, "enmap202")
    return to_uint(data, 14, nodata, name).cube

