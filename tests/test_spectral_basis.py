"""Trained spectral bases (``hsicomp train-basis``) and the klt and coolchic files coded with
one: the file carries the basis's sha256, the decoder needs the same model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import prepare_synthetic

from hsicomp import cli
from hsicomp.codecs import get_codec
from hsicomp.codecs.klt import eigenbasis
from hsicomp.errors import HsicompError
from hsicomp.models.spectral import SpectralBasisModel, load_basis_model

SPEC = {"seed": 4, "bands": 12, "rows": 16, "cols": 16, "bit_depth": 12,
        "patches": {"train": 2, "val": 1, "test": 1}}
COOLCHIC = {"iterations": 30, "basis": 3, "grids": 2, "channels": 1, "synth_hidden": 4,
            "synth_layers": 1, "arm_hidden": 4, "context": 4, "lam": 0.01}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A prepared dataset, its basis file (written by the command) and its test cube."""
    root = tmp_path_factory.mktemp("basis")
    data = prepare_synthetic(root, SPEC)
    out = root / "spectral-basis.npz"
    assert cli.main(["train-basis", "--data", str(data), "--out", str(out)]) == 0
    from hsicomp.io.manifest import pick_test_patch, read_test_patch

    manifest = data / "manifest.csv"
    cube = read_test_patch(manifest, pick_test_patch(manifest))
    return data, out, cube


def test_basis_is_the_klt_of_the_training_spectra(trained):
    data, path, _ = trained
    model = load_basis_model(path)
    import h5py

    with h5py.File(data / "train.h5") as f:
        cubes = [f["patches"][name][()] for name in sorted(f["patches"])]
    spectra = np.concatenate([c.reshape(c.shape[0], -1) for c in cubes], axis=1)
    mean, values, vectors, _ = eigenbasis(spectra[:, :, None])
    assert np.array_equal(model.mean, mean.astype(np.int64))
    np.testing.assert_allclose(model.values, values, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(np.abs(model.vectors.T @ vectors), np.eye(12), atol=1e-6)
    assert np.all(np.diff(model.values) <= 0)


def test_file_is_the_same_bytes_each_time_and_digest_follows_the_arrays(trained, tmp_path):
    _, path, _ = trained
    model = load_basis_model(path)
    again = tmp_path / "again.npz"
    model.save(again)
    assert again.read_bytes() == path.read_bytes()
    other = SpectralBasisModel(model.mean + 1, model.values, model.vectors)
    assert other.digest != model.digest == load_basis_model(again).digest


def test_bad_basis_files_are_one_line_errors(tmp_path):
    missing = tmp_path / "missing.npz"
    with pytest.raises(HsicompError, match="spectral basis file not found"):
        load_basis_model(missing)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(HsicompError, match="junk.npz: not a spectral basis file"):
        load_basis_model(junk)
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, mean=np.zeros(3, np.int64), values=np.zeros(3), vectors=np.zeros((2, 2)))
    with pytest.raises(HsicompError, match="bad array shapes"):
        load_basis_model(wrong)


def test_train_basis_without_training_patches_fails_in_one_line(tmp_path, capsys):
    assert cli.main(["train-basis", "--data", str(tmp_path), "--out",
                     str(tmp_path / "b.npz")]) != 0
    err = capsys.readouterr().err
    assert err.startswith("hsicomp: error:") and err.count("\n") == 1
    assert not (tmp_path / "b.npz").exists()


@pytest.mark.parametrize(("name", "params"), [("klt", {"step": 20}), ("coolchic", COOLCHIC)])
def test_files_carry_the_digest_and_need_the_same_model(trained, tmp_path, capsys, name,
                                                       params):
    _, path, cube = trained
    codec = get_codec(name, {**params, "basis_model": str(path)})
    data = codec.encode(cube, 0, 12)
    out = codec.decode(data, "a.hsic")
    own = get_codec(name, params).encode(cube, 0, 12)
    digest = load_basis_model(path).digest
    assert digest in data and digest not in own
    if name == "klt":  # exact synthesis: the encoder's reconstruction is checked
        assert np.abs(out.astype(int) - cube).max() <= 12 * 20
    else:
        assert np.array_equal(out, codec.last_reconstruction)
    with pytest.raises(HsicompError, match="a.hsic: coded with spectral basis model "
                       f"{digest.hex()[:16]}.*give that model file with the parameter "
                       "basis_model"):
        get_codec(name, params).decode(data, "a.hsic")
    other = tmp_path / "other.npz"
    model = load_basis_model(path)
    SpectralBasisModel(model.mean, model.values, -model.vectors).save(other)
    with pytest.raises(HsicompError, match=f"a.hsic: coded with model {digest.hex()[:16]}"
                       r"\.\.\., but .*other.npz is model"):
        get_codec(name, {**params, "basis_model": str(other)}).decode(data, "a.hsic")
    with pytest.raises(HsicompError, match="a spectral basis of 12 bands, the cube has 11"):
        get_codec(name, {**params, "basis_model": str(path)}).encode(cube[:11], 0, 12)
    file = tmp_path / "a.hsic"
    file.write_bytes(data)
    assert cli.main(["info", str(file)]) == 0
    assert f"basis_model_sha256: {digest.hex()}" in capsys.readouterr().out


def test_coolchic_basis_model_needs_a_basis(trained):
    _, path, _ = trained
    with pytest.raises(HsicompError, match="basis_model needs basis > 0"):
        get_codec("coolchic", {"basis_model": str(path)})
