"""GDN layers and the learned transform codec (shapes, training, compress/decompress)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import smooth_cube

from hsicomp.models.gdn import (
    GDN,
    PRESETS,
    TransformCodec,
    TransformCodecConfig,
    band_statistics,
    rate_distortion_loss,
)

torch.set_num_threads(1)


def test_gdn_parameters_stay_in_range_after_negative_push():
    torch.manual_seed(0)
    gdn = GDN(4)
    opt = torch.optim.SGD(gdn.parameters(), lr=100.0)
    for _ in range(3):
        opt.zero_grad()
        (gdn.beta.sum() + gdn.gamma.sum()).backward()  # pushes both towards -inf
        opt.step()
    assert gdn.beta_param.detach().min() < 0 and gdn.gamma_param.detach().min() < 0
    assert gdn.beta.detach().min().item() >= gdn.beta_min * (1 - 1e-3)
    assert gdn.gamma.detach().min().item() >= 0.0
    y = gdn(torch.randn(2, 4, 5, 5))
    assert torch.all(torch.isfinite(y))
    # Stuck below the bound, a loss that wants larger values still gets a gradient.
    gdn.zero_grad()
    (-gdn.beta.sum() - gdn.gamma.sum()).backward()
    assert float(gdn.beta_param.grad.abs().min()) > 0
    assert float(gdn.gamma_param.grad.abs().min()) > 0


def test_gdn_matches_formula_and_inverse_undoes_it_for_small_inputs():
    torch.manual_seed(1)
    gdn = GDN(3)
    with torch.no_grad():
        gdn.beta_param.copy_(torch.tensor([1.0, 1.3, 0.8]))
        gdn.gamma_param.copy_(0.3 * torch.rand(3, 3))
    x = torch.randn(2, 3, 4, 4)
    beta, gamma = gdn.beta.detach(), gdn.gamma.detach()
    expected = x / torch.sqrt(beta.view(1, 3, 1, 1)
                              + torch.einsum("ij,bjhw->bihw", gamma, x * x))
    assert torch.allclose(gdn(x), expected, atol=1e-5)

    igdn = GDN(3, inverse=True)
    igdn.load_state_dict(gdn.state_dict())
    with torch.no_grad():
        igdn.beta_param.copy_(torch.ones(3))  # beta = 1: GDN is the identity to first order
        gdn.beta_param.copy_(torch.ones(3))
    with torch.no_grad():
        small = 1e-2 * x
        rel_small = ((igdn(gdn(small)) - small).abs().max() / small.abs().max()).item()
        large = 3 * x
        rel_large = ((igdn(gdn(large)) - large).abs().max() / large.abs().max()).item()
    assert rel_small < 1e-4
    assert rel_large > 1e-2  # the approximation holds only for small inputs


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_odd_shapes_and_latent_size(name):
    torch.manual_seed(2)
    config = PRESETS[name].with_bands(5)
    model = TransformCodec(config)
    x = torch.randn(2, 5, 13, 19)
    f = config.downsampling
    for train in (True, False):
        model.train(train)
        out = model(x)
        assert out.x_hat.shape == x.shape
        assert out.y_hat.shape == (2, config.latent_channels, -(-13 // f), -(-19 // f))
        assert out.likelihoods.shape == out.y_hat.shape
    assert model.latent_shape(13, 19) == out.y_hat.shape[1:]
    assert torch.equal(out.y_hat, torch.round(out.y_hat))  # eval mode rounds


def test_presets_and_config():
    assert PRESETS["tiny"].downsampling == 4
    assert PRESETS["paper"].downsampling == 16
    assert PRESETS["paper"].attention and PRESETS["paper"].hidden_channels == 192
    assert PRESETS["tiny"].with_bands(7).bands == 7
    with pytest.raises(ValueError):
        TransformCodecConfig(stages=0)
    one = TransformCodec(TransformCodecConfig(bands=3, spectral_channels=4, hidden_channels=4,
                                              latent_channels=2, stages=1, attention=False))
    assert one(torch.randn(1, 3, 5, 7)).x_hat.shape == (1, 3, 5, 7)
    with pytest.raises(ValueError):
        one(torch.randn(1, 4, 5, 7))


def test_normalization_round_trip():
    cube = smooth_cube((6, 9, 11), 12, seed=3).astype(np.float32)
    model = TransformCodec(PRESETS["tiny"].with_bands(6))
    mean, std = band_statistics(cube)
    model.set_normalization(mean, std)
    x = torch.from_numpy(cube)[None]
    z = model.normalize(x)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std().item() - 1) < 0.05
    assert torch.allclose(model.denormalize(z), x, atol=1e-2)
    with pytest.raises(ValueError):
        model.set_normalization(mean, -std)


def test_training_lowers_rate_distortion_loss():
    torch.manual_seed(0)
    cube = smooth_cube((8, 32, 32), 12, seed=1).astype(np.float32)
    model = TransformCodec(PRESETS["tiny"].with_bands(8))
    model.set_normalization(*band_statistics(cube))
    x = model.normalize(torch.from_numpy(cube)[None])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss, _, _ = rate_distortion_loss(x, model(x), lmbda=10.0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.4 * first, (first, last)
    model.eval()
    with torch.no_grad():
        _, bps, mse = rate_distortion_loss(x, model(x), lmbda=10.0)
    assert mse.item() < 0.25 and bps.item() < 2.0


def test_compress_decompress_matches_eval_forward_and_survives_save():
    torch.manual_seed(4)
    model = TransformCodec(PRESETS["tiny"].with_bands(5)).eval()
    with pytest.raises(RuntimeError):
        model.compress(torch.randn(1, 5, 13, 19))
    model.entropy.freeze()
    x = torch.randn(1, 5, 13, 19)
    data = model.compress(x)
    assert model.compress(x) == data
    rec = model.decompress(data, 13, 19)
    with torch.no_grad():
        ref = model(x).x_hat
    assert rec.shape == x.shape and torch.allclose(rec, ref, atol=1e-5)

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = TransformCodec(PRESETS["tiny"].with_bands(5)).eval()
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.allclose(other.decompress(data, 13, 19), rec, atol=1e-6)
    with pytest.raises(ValueError):
        other.decompress(data[:-2], 13, 19)
