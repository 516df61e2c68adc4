"""The released LineRWKV checkpoints: DVC imports pinned to the authors' commit, a checked
conversion, and the workflow coding with them without training.

The tests that need the checkpoints use the copies in ../shared/models/linerwkv-release/
(skipped when absent) and a local git repository that holds them at the published paths,
standing in for the authors' repository (no network here).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import (
    REPO,
    SHARED,
    dvc,
    enmap_crop,
    git,
    one_line_error,
    read_csv,
    run_snakemake,
    write_config,
)

from hsicomp.codecs import get_codec
from hsicomp.io.container import unpack
from hsicomp.models.checkpoint import import_checkpoint, load_model, model_hash
from hsicomp.models.release import COMMIT, RELEASE, REPOSITORY, file_sha256

COPIES = SHARED / "models" / "linerwkv-release"
IMPORTS = REPO / "checkpoints" / "linerwkv-release"
needs_copies = pytest.mark.skipif(not COPIES.is_dir(),
                                  reason="../shared/models/linerwkv-release absent")

TINY_RELEASE = {
    "datasets": {"tiny": {"kind": "synthetic", "seed": 5, "bands": 6, "rows": 12, "cols": 10,
                          "bit_depth": 14, "patches": {"train": 1, "val": 1, "test": 2}}},
    "deltas": [0],
    "codecs": {"linerwkv-arith": {"codec": "linerwkv", "params": {"coder": "arith"}}},
    "evaluation": {"shards": 1},
    "linerwkv": {"weights": "release", "sizes": ["S"], "threads": 1},
}


def _stage(size: str) -> dict:
    return yaml.safe_load((IMPORTS / f"{size.lower()}.pth.dvc").read_text())


def test_committed_imports_pin_the_published_checkpoints() -> None:
    from dvc.repo import Repo

    repo = Repo(str(REPO))
    for size, release in RELEASE.items():
        stage = _stage(size)
        assert stage["frozen"] is True  # `dvc update` is the only way to move it
        (dep,) = stage["deps"]
        assert dep["path"] == release.path
        assert dep["repo"] == {"url": REPOSITORY, "rev": COMMIT, "rev_lock": COMMIT}
        (out,) = stage["outs"]
        assert (out["path"], out["size"]) == (f"{size.lower()}.pth", release.size_bytes)
        loaded = repo.stage.load_one(str(IMPORTS / f"{size.lower()}.pth.dvc"))
        assert loaded.compute_md5() == stage["md5"]  # DVC sees the stage unchanged
    ignored = (IMPORTS / ".gitignore").read_text().split()
    assert sorted(ignored) == sorted(f"/{size.lower()}.pth" for size in RELEASE)


@needs_copies
def test_copies_are_the_release() -> None:
    import hashlib

    for size, release in RELEASE.items():
        copy = COPIES / f"{size.lower()}.pth"
        assert file_sha256(copy) == release.sha256
        md5 = hashlib.md5(copy.read_bytes(), usedforsecurity=False).hexdigest()
        assert _stage(size)["outs"][0]["md5"] == md5


def _mirror(folder: Path) -> tuple[Path, str]:
    """A git repository with the checkpoints at their published paths; (path, commit)."""
    folder.mkdir()
    git(folder, "init", "-q")
    for size, release in RELEASE.items():
        target = folder / release.path
        target.parent.mkdir(parents=True)
        shutil.copyfile(COPIES / f"{size.lower()}.pth", target)
    git(folder, "add", "-A")
    git(folder, "commit", "-q", "-m", "release")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip()
    return folder, head


@needs_copies
def test_import_workflow_push_and_pull(tmp_path: Path) -> None:
    """dvc import gives the committed stage; the workflow fetches a missing checkpoint,
    converts it and codes with it (nothing trained); a push/pull round trip then leaves
    nothing to do."""
    mirror, commit = _mirror(tmp_path / "mirror")
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    (project / "checkpoints" / "linerwkv-release").mkdir(parents=True)
    dvc(project, "import", "-q", str(mirror), RELEASE["S"].path,
        "-o", "checkpoints/linerwkv-release/s.pth", "--rev", commit)
    imported = yaml.safe_load((project / "checkpoints/linerwkv-release/s.pth.dvc").read_text())
    assert imported["outs"] == _stage("S")["outs"]
    assert imported["deps"][0]["path"] == _stage("S")["deps"][0]["path"]

    # the workflow fetches what is missing (here from the mirror) and trains nothing
    checkpoint = project / "checkpoints" / "linerwkv-release" / "s.pth"
    checkpoint.unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    config = write_config(tmp_path / "release.yaml", TINY_RELEASE)
    run_snakemake(project, "--cores", "2", "results/rd_all.csv", "--configfile", str(config))
    assert file_sha256(checkpoint) == RELEASE["S"].sha256
    model, data = load_model(project / "models" / "release" / "linerwkv-S.pt")
    assert model_hash(model) == RELEASE["S"].weights_sha256
    assert data["metadata"]["source_sha256"] == RELEASE["S"].sha256
    assert not (project / "models" / "tiny").exists() and not (project / "logs" / "train").exists()
    rd = read_csv(project / "results" / "rd_all.csv")
    assert [(r["codec"], r["model"], r["all_ok"]) for r in rd] == [("linerwkv-arith", "S",
                                                                     "true")]

    dvc(project, "remote", "add", "-d", "local", str(remote))
    dvc(project, "push", "-q")
    checkpoint.unlink()
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, "pull", "-q")
    assert file_sha256(checkpoint) == RELEASE["S"].sha256
    # what `make pull` does after pulling: pulled files get new modification times
    run_snakemake(project, "--cores", "1", "--touch", "models", "--configfile", str(config))
    nothing = run_snakemake(project, "-n", "results/rd_all.csv", "--configfile", str(config))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


@needs_copies
def test_conversion_rule_gives_the_published_models(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints" / "linerwkv-release"
    folder.mkdir(parents=True)
    for size in RELEASE:
        shutil.copyfile(COPIES / f"{size.lower()}.pth", folder / f"{size.lower()}.pth")
    config = write_config(tmp_path / "release.yaml",
                          {**TINY_RELEASE, "linerwkv": {"weights": "release",
                                                         "sizes": list(RELEASE)}})
    run_snakemake(tmp_path, "--cores", "2", "models", "--configfile", str(config))
    for size, release in RELEASE.items():
        model, data = load_model(tmp_path / "models" / "release" / f"linerwkv-{size}.pt")
        assert data["size"] == size
        assert sum(p.numel() for p in model.parameters()) == release.parameters
        assert model_hash(model) == release.weights_sha256
        assert data["metadata"]["source_sha256"] == release.sha256


@needs_copies
def test_import_refuses_a_file_that_is_not_the_release(tmp_path: Path) -> None:
    assert "not the released LineRWKV S checkpoint" in one_line_error(
        import_checkpoint, COPIES / "xs.pth", tmp_path / "x.pt", "S")
    assert not (tmp_path / "x.pt").exists()


@needs_copies
@pytest.mark.parametrize(("crop", "delta", "network"), [("mid_64x64", 0, True),
                                                        ("se_128x64", 40, False)])
def test_released_s_is_used_where_it_pays(tmp_path: Path, crop: str, delta: int,
                                          network: bool) -> None:
    """linerwkv-lms (network auto) with the released S on the real crops: at delta 0 on
    mid_64x64 the file uses the network; at delta 40 on se_128x64 the network does not pay
    and the file is the one coded without it, which decodes without the model."""
    cube = enmap_crop(crop)
    model = tmp_path / "s.pt"
    import_checkpoint(COPIES / "s.pth", model, "S")
    params = {"coder": "arith", "P": 7, "nu_max": 6, "ext_init": 8}
    data = get_codec("linerwkv-lms", {"model": str(model), **params}).encode(cube, delta, 16)
    used = unpack(data)[1][2 + 32] != 255
    assert used == network
    decoder = get_codec("linerwkv-lms", {"model": str(model)} if used else {})
    assert int(np.abs(decoder.decode(data).astype(np.int64) - cube).max()) <= delta

