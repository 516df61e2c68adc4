"""The gdn-gain codec: gain units, geometric level interpolation, side info, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    GDN_BIT_DEPTH,
    GDN_SHAPE,
    gdn_test_config,
    random_gdn_model_file,
    smooth_cube,
)
from helpers import one_line_error as _error
from helpers import prepare_synthetic as _prepare

import hsicomp.models.gain as gain_module
from hsicomp import cli
from hsicomp.codecs import get_codec
from hsicomp.io.container import pack, unpack
from hsicomp.models.checkpoint import load_gdn_model
from hsicomp.models.gain import LEVEL_SCALE, gain_vectors
from hsicomp.models.gdn import TransformCodec
from hsicomp.training.gdn import GdnTrainer, GdnTrainSettings

torch.set_num_threads(1)
SHAPE = GDN_SHAPE
BIT_DEPTH = GDN_BIT_DEPTH


def _distinct_gains(model: TransformCodec) -> None:
    """Distinct gain rows, some negative (used as absolute values)."""
    model.gain_units.gain.copy_(torch.tensor([[0.5, -0.7, 0.6, 0.4], [1.0] * 4,
                                              [4.0, 3.0, -5.0, 2.5]]))
    model.gain_units.inverse_gain.copy_(1 / model.gain_units.gain.detach())


def _model_file(path: Path, levels: int) -> Path:
    return random_gdn_model_file(path, gdn_test_config(levels=levels),
                                 setup=_distinct_gains if levels else None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("gain-models")
    return _model_file(folder / "gain.pt", 3), _model_file(folder / "plain.pt", 0)


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return smooth_cube(SHAPE, BIT_DEPTH, 7)


def test_interpolation_is_geometric_and_exact_at_trained_levels():
    g = torch.tensor([[0.5, -2.0], [2.0, 8.0], [3.0, 1.0]])
    gi = 1 / g
    for s in range(3):
        a, b = gain_vectors(g, gi, float(s))
        assert torch.equal(a, g[s].abs()) and torch.equal(b, gi[s].abs())
    a, b = gain_vectors(g, gi, 0.5)
    assert torch.allclose(a, torch.tensor([1.0, 4.0])) and torch.allclose(b, 1 / a)
    a, _ = gain_vectors(g, gi, 1.25)
    assert torch.allclose(a, torch.tensor([2.0**0.75 * 3.0**0.25, 8.0**0.75]))
    for bad in (-0.1, 2.01):
        with pytest.raises(ValueError):
            gain_vectors(g, gi, bad)


def test_encoder_and_decoder_use_identical_gain_vectors(models, cube, monkeypatch):
    calls: list[tuple[float, torch.Tensor, torch.Tensor]] = []
    original = gain_module.gain_vectors

    def spy(gain, inverse_gain, level):
        result = original(gain, inverse_gain, level)
        calls.append((level, *(v.detach().clone() for v in result)))
        return result

    monkeypatch.setattr(gain_module, "gain_vectors", spy)
    codec = get_codec("gdn-gain", {"model": str(models[0]), "level": 1.3})
    data = codec.encode(cube, 0, BIT_DEPTH)
    decoded = codec.decode(data)
    (lv_enc, g_enc, gi_enc), (lv_dec, g_dec, gi_dec) = calls
    assert lv_enc == lv_dec == round(1.3 * LEVEL_SCALE) / LEVEL_SCALE
    assert torch.equal(g_enc, g_dec) and torch.equal(gi_enc, gi_dec)
    # the decoder with another rule (linear interpolation) gives another reconstruction

    def linear(gain, inverse_gain, level):
        s, t = int(level), level - int(level)
        return tuple((1 - t) * m[s].abs() + t * m[s + 1].abs() for m in (gain, inverse_gain))

    monkeypatch.setattr(gain_module, "gain_vectors", linear)
    assert not np.array_equal(codec.decode(data), decoded)


def test_rate_is_the_file_size_and_the_level_is_recorded(models, cube, tmp_path, capsys):
    np.save(tmp_path / "c.npy", cube)
    sizes = []
    for level in ("0", "0.5", "2"):
        out = tmp_path / f"c{level}.hsic"
        assert cli.main(["encode", str(tmp_path / "c.npy"), str(out), "--codec", "gdn-gain",
                         "--model", str(models[0]), "--param", f"level={level}",
                         "--bit-depth", str(BIT_DEPTH)]) == 0
        assert f"{out.stat().st_size} bytes" in capsys.readouterr().out
        sizes.append(out.stat().st_size)
        assert cli.main(["info", str(out)]) == 0
        info = capsys.readouterr().out
        code = round(float(level) * LEVEL_SCALE)
        assert "lossy: yes" in info and f"level: {float(level):g} ({code}/65536)" in info
        assert cli.main(["decode", str(out), str(tmp_path / "d.npy"), "--model",
                         str(models[0])]) == 0
        assert np.load(tmp_path / "d.npy").shape == SHAPE
    assert sizes[0] < sizes[2]  # larger gains, more bits


def test_bad_level_and_wrong_model_are_one_line_errors(models, cube):
    gain, plain = (str(p) for p in models)
    for level in (-0.5, 2.5, float("nan"), float("inf")):
        assert "level must be in [0, 2]" in _error(
            get_codec("gdn-gain", {"model": gain, "level": level}).encode, cube, 0, BIT_DEPTH)
    assert "has no gain units" in _error(get_codec("gdn-gain", {"model": plain}).encode, cube,
                                         0, BIT_DEPTH)
    assert "use codec 'gdn-gain'" in _error(get_codec("gdn", {"model": gain}).encode, cube, 0,
                                            BIT_DEPTH)
    assert "needs a model file" in _error(get_codec("gdn-gain").encode, cube, 0, BIT_DEPTH)
    codec = get_codec("gdn-gain", {"model": gain, "level": 2})
    data = codec.encode(cube, 0, BIT_DEPTH)
    assert "has no gain units" in _error(get_codec("gdn-gain", {"model": plain}).decode, data,
                                         "f.hsic")
    header, side, payload = unpack(data)
    too_high = side[:-3] + bytes([0x80, 0x80, 0x0C])  # level code 3 * 65536
    assert "corrupt header (level 3" in _error(codec.decode, pack(header, too_high, payload),
                                               "f.hsic")
    assert "corrupt side info" in _error(codec.decode, pack(header, side[:-3], payload), "f.hsic")
    for bad in (data[:-9], data[:40], b"not an hsic file"):
        _error(codec.decode, bad, "f.hsic")
    assert "lambdas must be" in _error(GdnTrainSettings.from_dict, {"lambdas": [1, -2]})


def test_short_training_gives_a_model_that_codes_every_level(tmp_path):
    """Training bookkeeping only: the rate-distortion points of a short run depend on the
    CPU's summation order (benchmarks/short_training_rd.py reports them)."""
    data = _prepare(tmp_path, {"seed": 2, "bands": 8, "rows": 32, "cols": 32, "bit_depth": 12,
                               "patches": {"train": 4, "val": 1, "test": 2}})
    out = tmp_path / "gain.pt"
    settings = {"epochs": 10, "batch": 4, "crop": 16, "lr_start": 1e-2, "lr_end": 1e-3,
                "lambdas": [0.03, 3.0, 300.0], "threads": 1, "seed": 0}
    GdnTrainer(data, out, GdnTrainSettings.from_dict(settings), progress=False).run()
    model, info = load_gdn_model(out)
    assert info["metadata"]["lambdas"] == [0.03, 3.0, 300.0] and model.gain_units.levels == 3
    cube = smooth_cube((8, 32, 32), 12, 3)
    for level in (0, 0.5, 1, 1.5, 2):
        codec = get_codec("gdn-gain", {"model": str(out), "level": level})
        data = codec.encode(cube, 0, 12)
        assert codec.encode(cube, 0, 12) == data
        code = round(level * LEVEL_SCALE)
        assert ("level", f"{level:g} ({code}/65536)") in codec.describe_side_info(
            unpack(data)[1])
        assert codec.decode(data).shape == (8, 32, 32)
