"""LineRWKV network: released key layout, sizes, RWKV-4 forms, causality, recurrent decoding."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from helpers import SHARED

from hsicomp.io.bands import ENMAP_202
from hsicomp.models import (
    SIZES,
    Block,
    LineRWKV,
    LineRWKVConfig,
    LineRWKVStepper,
    predict_recurrent,
)
from hsicomp.models.rwkv import init_state, wkv_sequence

KEYS_DIR = SHARED / "docs" / "linerwkv-checkpoint-keys"
ENMAP_TILE = SHARED / "data" / "enmap-potsdam" / "enmap_potsdam_tile_128_128.tif"

SMALL = LineRWKVConfig(width=8, n_enc=2, n_lines=2, n_bands=2, n_dec=2)


def _model(config: LineRWKVConfig, dtype: torch.dtype = torch.float32, seed: int = 0) -> LineRWKV:
    torch.manual_seed(seed)
    return LineRWKV(config).to(dtype).eval()


def _read_listing(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of a checkpoint key listing: lines ``key (d0, d1, ...) dtype``."""
    entries = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"(\S+) \(([\d, ]*)\) (\w+)", line.strip())
        assert match, f"unparsed line {line!r}"
        shape = tuple(int(d) for d in match.group(2).replace(" ", "").split(",") if d)
        entries.append((match.group(1), shape))
    return entries


@pytest.mark.parametrize(
    ("size", "count"), [("XS", 30_466), ("S", 135_042), ("M", 286_082), ("L", 900_290)]
)
def test_parameter_counts(size: str, count: int) -> None:
    model = LineRWKV(SIZES[size])
    assert sum(p.numel() for p in model.parameters()) == count
    assert LineRWKV.from_size(size.lower()).config == SIZES[size]


@pytest.mark.parametrize("size", ["XS", "S", "M"])
def test_state_dict_matches_released_listing(size: str) -> None:
    listing = KEYS_DIR / f"{size.lower()}.txt"
    if not listing.exists():
        pytest.skip(f"{listing} not available")
    expected = _read_listing(listing)
    model = LineRWKV(SIZES[size])
    got = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    assert got == expected
    # A state dict in the released layout loads strictly, without renaming.
    torch.manual_seed(1)
    released = {key: torch.randn(shape) for key, shape in expected}
    model.load_state_dict(released, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, released[key]), key


def test_size_l_layout_follows_the_same_naming() -> None:
    keys = LineRWKV(SIZES["L"]).state_dict()
    assert keys["encoder.convs.2.weight"].shape == (96, 96, 3)
    assert keys["decoder.norms.2.bias"].shape == (96,)
    assert "blocks_lines.5.att.time_decay" in keys and "blocks_lines.6.ln1.weight" not in keys
    assert "blocks_bands.5.ffn.value.weight" in keys
    assert [k for k in keys if k.endswith("ln0.weight")] == [
        "blocks_lines.0.ln0.weight",
        "blocks_bands.0.ln0.weight",
    ]


def test_rwkv_initialisation() -> None:
    model = LineRWKV(SIZES["M"])  # stacks of 4 layers, F = 64
    width, n_layers = 64, 4
    for stack in (model.blocks_lines, model.blocks_bands):
        for layer, block in enumerate(stack):
            r01 = layer / (n_layers - 1)
            r1a0 = 1 - layer / n_layers
            for h in (0, 1, 2, 31, 63):
                att, ffn = block.att, block.ffn
                decay = -5 + 8 * (h / (width - 1)) ** (0.7 + 1.3 * r01)
                first = math.log(0.3) + ((h + 1) % 3 - 1) * 0.5
                mix_k = (h / width) ** r1a0
                assert att.time_decay[h].item() == pytest.approx(decay, abs=1e-6)
                assert att.time_first[h].item() == pytest.approx(first, abs=1e-6)
                assert att.time_mix_k[0, 0, h].item() == pytest.approx(mix_k, abs=1e-6)
                assert att.time_mix_v[0, 0, h].item() == pytest.approx(mix_k + 0.3 * r01, abs=1e-6)
                mix_r = (h / width) ** (0.5 * r1a0)
                assert att.time_mix_r[0, 0, h].item() == pytest.approx(mix_r, abs=1e-6)
                assert ffn.time_mix_k[0, 0, h].item() == pytest.approx(mix_k, abs=1e-6)
                assert ffn.time_mix_r[0, 0, h].item() == pytest.approx(mix_k, abs=1e-6)
    assert model.blocks_lines[0].att.time_decay[-1].item() == pytest.approx(3.0)
    assert model.blocks_lines[0].att.time_decay[0].item() == pytest.approx(-5.0)


def _wkv_reference(k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor):
    """The WKV definition evaluated term by term, with a maximum per query for stability."""
    n_tokens = k.shape[-2]
    out = torch.empty_like(k)
    for t in range(n_tokens):
        past = torch.arange(t, dtype=k.dtype)
        expo = torch.cat([k[..., :t, :] - (t - 1 - past)[:, None] * w, (u + k[..., t, :])[None]])
        vals = v[..., : t + 1, :]
        weights = torch.exp(expo - expo.amax(dim=-2, keepdim=True))
        out[..., t, :] = (weights * vals).sum(-2) / weights.sum(-2)
    return out


def test_wkv_matches_its_definition() -> None:
    torch.manual_seed(0)
    k = torch.randn(3, 30, 6, dtype=torch.float64)
    v = torch.randn(3, 30, 6, dtype=torch.float64)
    w = torch.exp(torch.tensor([-6.0, -2.0, -0.5, 0.0, 1.0, 2.5], dtype=torch.float64))
    u = torch.randn(6, dtype=torch.float64)
    got = wkv_sequence(k, v, w, u)
    for n in range(3):
        assert torch.allclose(got[n], _wkv_reference(k[n], v[n], w, u), rtol=0, atol=1e-12)
    # Plain sums, no stabilisation, for moderate values.
    t = 7
    j = torch.arange(t, dtype=torch.float64)
    e = torch.exp(k[0, :t] - (t - 1 - j)[:, None] * w)
    cur = torch.exp(u + k[0, t])
    plain = ((e * v[0, :t]).sum(0) + cur * v[0, t]) / (e.sum(0) + cur)
    assert torch.allclose(got[0, t], plain, rtol=0, atol=1e-12)


def test_wkv_is_stable_for_extreme_decay_and_keys() -> None:
    torch.manual_seed(1)
    time_decay = torch.tensor([-40.0, -8.0, 0.0, 4.0, 12.0, 60.0, 100.0])
    k = torch.randn(2, 64, 7) * 300  # exponents far outside the float32 range
    v = torch.randn(2, 64, 7)
    u = torch.tensor([-50.0, -1.0, 0.0, 1.0, 5.0, 50.0, 0.3])
    got = wkv_sequence(k, v, torch.exp(time_decay), u)
    assert torch.isfinite(got).all()
    ref = _wkv_reference(k.double()[0], v.double()[0], torch.exp(time_decay.double()), u.double())
    assert (got[0].double() - ref).abs().max().item() < 1e-4
    # The output is a weighted mean of values seen so far.
    assert (got.abs() <= v.abs().cummax(dim=1).values + 1e-5).all()


def _stack(width: int, n_layers: int, dtype: torch.dtype, extreme: bool) -> list[Block]:
    torch.manual_seed(2)
    blocks = [Block(width, k, n_layers).to(dtype) for k in range(n_layers)]
    if extreme:
        with torch.no_grad():
            for block in blocks:
                block.att.time_decay.copy_(torch.linspace(-30.0, 12.0, width))
                block.att.time_first.copy_(torch.linspace(-20.0, 20.0, width))
                block.att.key.weight.mul_(40.0)  # keys of several hundred
    return blocks


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_block_parallel_and_recurrent_forms_agree(
    extreme: bool, dtype: torch.dtype, tol: float
) -> None:
    width, n_layers = 16, 3
    blocks = _stack(width, n_layers, dtype, extreme)
    x = torch.randn(2, 5, 40, width, dtype=dtype) * 2  # two leading batch dims, T = 40
    with torch.no_grad():
        parallel = x
        for block in blocks:
            parallel = block(parallel)
        states = [block.init_state(x.shape[:2]) for block in blocks]
        steps = []
        for t in range(x.shape[2]):
            h = x[:, :, t]
            for n, block in enumerate(blocks):
                h, states[n] = block.step(h, states[n])
            steps.append(h)
    recurrent = torch.stack(steps, dim=2)
    assert torch.isfinite(parallel).all()
    scale = parallel.abs().max().item()
    assert (parallel - recurrent).abs().max().item() <= tol * max(scale, 1.0)


def test_initial_state() -> None:
    state = init_state((3, 4), 5, dtype=torch.float64)
    assert state.pp.shape == (3, 4, 5) and (state.pp == -1e30).all()
    assert all((s == 0).all() for s in (state.ffn_xx, state.att_xx, state.aa, state.bb))


def test_forward_shapes_column_selection_and_chunks() -> None:
    model = _model(SIZES["S"], torch.float64)
    torch.manual_seed(3)
    x = torch.randn(2, 5, 7, 20, dtype=torch.float64)
    with torch.no_grad():
        full = model(x)
        assert full.shape == (2, 5, 6, 20)
        cols = torch.tensor([3, 0, 19, 7])
        assert torch.allclose(model(x, columns=cols), full[..., cols], rtol=0, atol=1e-12)
        per_image = torch.tensor([[1, 2, 3], [18, 5, 5]])
        picked = model(x, columns=per_image)
        assert torch.allclose(picked[0], full[0][..., per_image[0]], rtol=0, atol=1e-12)
        assert torch.allclose(picked[1], full[1][..., per_image[1]], rtol=0, atol=1e-12)
        for chunk in (1, 3, 50):
            assert torch.allclose(model(x, column_chunk=chunk), full, rtol=0, atol=1e-12)
        one_band = model(x[:, :1])
        assert torch.allclose(one_band, full[:, :1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        model(x[:, :, :1])


def test_band_zero_predicts_previous_line_plus_correction() -> None:
    model = _model(SMALL, torch.float64)
    with torch.no_grad():
        model.bandzerodec.conv_out.weight.zero_()
        model.bandzerodec.conv_out.bias.fill_(0.25)
        x = torch.randn(1, 3, 6, 10, dtype=torch.float64)
        pred = model(x)
    assert torch.allclose(pred[0, 0], x[0, 0, :-1] + 0.25, rtol=0, atol=1e-14)


def test_causal_context() -> None:
    """Prediction of (line t+1, band i, column c) depends exactly on lines 0..t of bands 0..i
    and line t+1 of bands 0..i-1, within n_enc columns of c."""
    model = _model(SMALL, torch.float64, seed=4)
    n_bands, n_lines, n_cols = 4, 5, 11
    torch.manual_seed(5)
    x = torch.randn(1, n_bands, n_lines, n_cols, dtype=torch.float64)
    band = torch.arange(n_bands)[:, None, None]
    line = torch.arange(1, n_lines)[None, :, None]  # predicted line of each output row
    col = torch.arange(n_cols)[None, None, :]
    with torch.no_grad():
        base = model(x)[0]
        for c0 in (0, 5):
            for j in range(n_bands):
                for s in range(n_lines):
                    moved = x.clone()
                    moved[0, j, s, c0] += 1.0
                    diff = (model(moved)[0] - base).abs()
                    earlier = (j <= band) & (s <= line - 1)
                    current = (j < band) & (s == line)
                    expected = (earlier | current) & ((col - c0).abs() <= SMALL.n_enc)
                    assert diff[~expected].max().item() == 0.0, (j, s, c0)
                    if expected.any():
                        assert diff[expected].min().item() > 1e-9, (j, s, c0)


def _enmap_crop(n_bands: int = 12, lines: int = 16, columns: int = 32) -> torch.Tensor:
    if not ENMAP_TILE.exists():
        pytest.skip(f"{ENMAP_TILE} not available")
    rasterio = pytest.importorskip("rasterio")
    from rasterio.windows import Window

    bands = [b + 1 for b in ENMAP_202[:n_bands]]
    with rasterio.open(ENMAP_TILE) as src:
        cube = src.read(bands, window=Window(0, 0, columns, lines)).astype("float64")
    x = torch.from_numpy(cube)
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True)
    return (x - mean) / std  # (I, T, C)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-9)])
def test_stepper_reproduces_forward_on_enmap(dtype: torch.dtype, tol: float) -> None:
    cube = _enmap_crop().to(dtype)
    x = torch.stack([cube, cube.flip(-1)])  # two images: (2, 12, 16, 32)
    for size in ("S", "M"):
        model = _model(SIZES[size], dtype)
        with torch.no_grad():
            parallel = model(x)
        recurrent = predict_recurrent(model, x)
        assert recurrent.shape == parallel.shape == (2, 12, 15, 32)
        assert (parallel - recurrent).abs().max().item() < tol
        single = predict_recurrent(model, x[1])  # no leading batch dimension
        assert (single - recurrent[1]).abs().max().item() < tol


def test_stepper_step_by_step_and_order_checks() -> None:
    model = _model(SMALL, torch.float64)
    torch.manual_seed(6)
    x = torch.randn(3, 4, 9, dtype=torch.float64)  # (I, T, C)
    with torch.no_grad():
        expected = model(x[None])[0]
    stepper = LineRWKVStepper(model)
    with pytest.raises(RuntimeError):
        stepper.begin_line()
    stepper.start(x[:, 0])
    for t in range(1, 4):
        stepper.begin_line()
        with pytest.raises(RuntimeError):
            stepper.predict_band(1)  # band 0 not pushed yet
        for i in range(3):
            # Values of later bands or lines are never given before this prediction.
            pred = stepper.predict_band(i)
            assert torch.allclose(pred, expected[i, t - 1], rtol=0, atol=1e-10)
            stepper.push_band(i, x[i, t])
        assert stepper.lines_done == t + 1
    with pytest.raises(RuntimeError):
        stepper.push_band(0, x[0, 0])  # no line open


def test_gradients_reach_every_parameter() -> None:
    model = _model(SMALL)
    x = torch.randn(2, 4, 6, 10)  # the spectral sequences need 3 tokens to use the decay
    loss = (model(x, columns=torch.tensor([1, 4, 8])) - x[:, :, 1:, [1, 4, 8]]).abs().mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_state_dict_round_trip(tmp_path: Path) -> None:
    model = _model(SIZES["XS"], seed=7)
    path = tmp_path / "xs.pt"
    torch.save(model.state_dict(), path)
    loaded = LineRWKV(SIZES["XS"])
    loaded.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = torch.randn(1, 4, 6, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))


@pytest.mark.parametrize("size", ["S", "M"])
def test_encoder_at_columns_equals_full_encoder(size):
    torch.manual_seed(1)
    model = LineRWKV.from_size(size).double()
    lines = torch.randn(2, 3, 4, 11, dtype=torch.float64)
    full = model.encoder(lines)
    shared = torch.tensor([0, 1, 5, 9, 10])
    assert torch.allclose(model.encoder.forward_at(lines, shared), full[..., shared, :],
                          rtol=0, atol=1e-12)
    per_image = torch.tensor([[0, 3, 10], [2, 7, 9]])
    got = model.encoder.forward_at(lines, per_image)
    for b in range(2):
        assert torch.allclose(got[b], full[b][..., per_image[b], :], rtol=0, atol=1e-12)


def test_recomputed_blocks_give_the_same_gradients():
    torch.manual_seed(2)
    model = LineRWKV.from_size("XS").double()
    x = torch.randn(1, 4, 6, 9, dtype=torch.float64)
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.recompute_blocks = recompute
        model(x, columns=torch.tensor([0, 4, 8])).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
