"""The gdn-ohm codec: One-Hot-Max quantisation, adaptive channel count, side info, training."""

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

from hsicomp import cli
from hsicomp.codecs import get_codec
from hsicomp.io.container import encode_varints, pack, unpack
from hsicomp.models.checkpoint import load_gdn_model
from hsicomp.models.gdn import TransformCodec, TransformCodecConfig
from hsicomp.models.ohm import OneHotMax, channels_for_fraction
from hsicomp.training.gdn import GdnTrainer, GdnTrainSettings

torch.set_num_threads(1)
SHAPE = GDN_SHAPE
BIT_DEPTH = GDN_BIT_DEPTH
BASE = gdn_test_config()
OHM = BASE.with_ohm(symbols=8, channels=6, min_channels=2)


def _skewed_pmf(model: TransformCodec) -> None:
    """A skewed pmf, so the tables differ from uniform."""
    model.entropy.logits.copy_(torch.linspace(-2, 2, OHM.ohm_symbols).repeat(6, 1))


def _model_file(path: Path, config: TransformCodecConfig) -> Path:
    return random_gdn_model_file(path, config,
                                 setup=_skewed_pmf if config.ohm_symbols else None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ohm-models")
    return _model_file(folder / "ohm.pt", OHM), _model_file(folder / "plain.pt", BASE)


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return smooth_cube(SHAPE, BIT_DEPTH, 7)


def test_channels_for_fraction():
    assert [channels_for_fraction(f, 2, 6) for f in (0, 0.1, 0.25, 0.5, 1)] == [2, 3, 3, 4, 6]
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            channels_for_fraction(bad, 2, 6)


def test_quantiser_is_one_hot_with_straight_through_gradient():
    torch.manual_seed(1)
    q = OneHotMax(features=3, channels=4, symbols=5)
    y = torch.randn(2, 3, 4, 4, requires_grad=True)
    features, lik = q(y, channels=3)
    assert features.shape == (2, 3, 4, 4) and lik.shape == (2, 4, 4, 4)
    assert torch.all(lik[:, 3] == 1)  # channel 3 is not sent: no bits
    pmf = torch.softmax(q.logits, dim=1)
    sym = q.symbols_of(y, 3)
    expect = torch.gather(pmf[:3].view(1, 3, 5, 1, 1).expand(2, 3, 5, 4, 4), 2,
                          sym.unsqueeze(2)).squeeze(2)
    assert torch.allclose(lik[:, :3], expect)
    (features.sum() - torch.log(lik).sum()).backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0  # through the soft assignment
    assert float(q.logits.grad.abs().sum()) > 0 and float(q.temperature.grad.abs().sum()) > 0
    q.eval()
    one_hot = q.one_hot(sym)
    assert torch.equal(one_hot.sum(dim=2)[:, :3], torch.ones(2, 3, 4, 4))
    assert torch.equal(one_hot[:, 3], torch.zeros(2, 5, 4, 4))
    assert torch.allclose(q(y, channels=3)[0], q.dequantize(one_hot))
    tables = q.freeze(precision=12)
    assert all(int(f.sum()) == 4096 and f[-1] == 1 and len(f) == 6 for f in tables.freqs)


def test_decoder_reproduces_the_encoders_reconstruction(models, cube):
    codec = get_codec("gdn-ohm", {"model": str(models[0]), "fraction": 0.5})
    data = codec.encode(cube, 0, BIT_DEPTH)
    decoded = codec.decode(data)
    assert np.array_equal(decoded, codec.decode(data))
    model, _ = load_gdn_model(models[0])
    with torch.no_grad():
        x = model.normalize(torch.from_numpy(cube.astype(np.float32))[None])
        expect = model.denormalize(model(x, channels=4).x_hat)[0].numpy()
    expect = np.clip(np.rint(expect), 0, (1 << BIT_DEPTH) - 1)
    assert np.abs(decoded.astype(float) - expect).max() <= 1  # float rounding only
    assert codec.last_stats["latent_shape"] == (4, 4, 5)


def test_rate_is_the_file_size_and_grows_with_the_fraction(models, cube, tmp_path, capsys):
    np.save(tmp_path / "c.npy", cube)
    sizes = []
    for fraction, channels in (("0", 2), ("0.5", 4), ("1", 6)):
        out = tmp_path / f"c{fraction}.hsic"
        assert cli.main(["encode", str(tmp_path / "c.npy"), str(out), "--codec", "gdn-ohm",
                         "--model", str(models[0]), "--param", f"fraction={fraction}",
                         "--bit-depth", str(BIT_DEPTH)]) == 0
        assert f"{out.stat().st_size} bytes" in capsys.readouterr().out
        sizes.append(out.stat().st_size)
        assert cli.main(["info", str(out)]) == 0
        info = capsys.readouterr().out
        assert "lossy: yes" in info and f"latent_shape: {channels}x4x5" in info
        assert cli.main(["decode", str(out), str(tmp_path / "d.npy"), "--model",
                         str(models[0])]) == 0
        assert np.load(tmp_path / "d.npy").shape == SHAPE
    assert sizes[0] < sizes[1] < sizes[2]


def test_bad_fraction_wrong_model_and_corrupt_files_are_one_line_errors(models, cube):
    ohm, plain = (str(p) for p in models)
    for fraction in (-0.5, 1.5, float("nan")):
        assert "fraction must be in [0, 1]" in _error(
            get_codec("gdn-ohm", {"model": ohm, "fraction": fraction}).encode, cube, 0,
            BIT_DEPTH)
    assert "no One-Hot-Max" in _error(get_codec("gdn-ohm", {"model": plain}).encode, cube, 0,
                                      BIT_DEPTH)
    assert "use codec 'gdn-ohm'" in _error(get_codec("gdn", {"model": ohm}).encode, cube, 0,
                                           BIT_DEPTH)
    assert "no gain units" in _error(get_codec("gdn-gain", {"model": ohm}).encode, cube, 0,
                                     BIT_DEPTH)
    codec = get_codec("gdn-ohm", {"model": ohm})
    data = codec.encode(cube, 0, BIT_DEPTH)
    header, side, payload = unpack(data)
    for channels in (1, 7):  # outside the model's 2..6
        bad = side[:33] + encode_varints([channels, 4, 5])
        assert f"corrupt header ({channels} OHM channels" in _error(
            codec.decode, pack(header, bad, payload), "f.hsic")
    for bad in (data[:-9], data[:40], b"not an hsic file"):
        _error(codec.decode, bad, "f.hsic")


def test_settings_validation():
    ok = {"ohm_symbols": 8, "ohm_min_channels": 1, "lambdas": [0.1, 10]}
    assert GdnTrainSettings.from_dict(ok).levels == 0  # OHM lambdas are no gain levels
    for bad, text in (({**ok, "lambdas": [1, 2, 3]}, "two values"),
                      ({**ok, "lambdas": None}, "two values"),
                      ({"ohm_symbols": 8, "lambdas": [1, 2]}, "two values"),
                      ({**ok, "ohm_min_channels": 99}, "ohm_min_channels must be in"),
                      ({"ohm_min_channels": 1}, "need ohm_symbols")):
        assert text in _error(GdnTrainSettings.from_dict, bad)


def test_short_adaptive_training_gives_a_model_that_codes_every_fraction(tmp_path):
    """Training bookkeeping only: the rate-distortion points of a short run depend on the
    CPU's summation order (benchmarks/short_training_rd.py reports them)."""
    data = _prepare(tmp_path, {"seed": 2, "bands": 8, "rows": 32, "cols": 32, "bit_depth": 12,
                               "patches": {"train": 4, "val": 1, "test": 2}})
    out = tmp_path / "ohm.pt"
    settings = {"epochs": 10, "batch": 4, "crop": 16, "lr_start": 1e-2, "lr_end": 1e-3,
                "ohm_symbols": 8, "ohm_min_channels": 1, "lambdas": [1.0, 300.0],
                "threads": 1, "seed": 0}
    GdnTrainer(data, out, GdnTrainSettings.from_dict(settings), progress=False).run()
    model, info = load_gdn_model(out)
    assert model.config.ohm_symbols == 8 and model.config.ohm_fewest_channels == 1
    assert info["metadata"]["lambdas"] == [1.0, 300.0]
    cube = smooth_cube((8, 32, 32), 12, 3)
    for fraction, sent in ((0, 1), (1, model.channels_sent(None))):
        codec = get_codec("gdn-ohm", {"model": str(out), "fraction": fraction})
        data = codec.encode(cube, 0, 12)
        assert codec.encode(cube, 0, 12) == data
        shape = "x".join(map(str, model.latent_shape(32, 32, sent)))
        assert dict(codec.describe_side_info(unpack(data)[1]))["latent_shape"] == shape
        assert codec.decode(data).shape == (8, 32, 32)


def test_only_an_ohm_model_takes_channels(models, cube):
    plain, _ = load_gdn_model(models[1])
    x = plain.normalize(torch.from_numpy(cube.astype(np.float32))[None])
    for call in (lambda: plain(x, channels=2), lambda: plain.compress(x, channels=2),
                 lambda: plain.latent_shape(13, 19, 2)):
        with pytest.raises(ValueError, match="only an OHM model takes channels"):
            call()
    ohm, _ = load_gdn_model(models[0])
    assert ohm.channels_sent(None) == 6 and plain.channels_sent(None) is None
    with pytest.raises(ValueError, match=r"channels must be in 2\.\.6"):
        ohm.compress(x, channels=1)
