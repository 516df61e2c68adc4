"""Factorized entropy model: likelihoods, frozen integer tables and the range-coded stream."""

from __future__ import annotations

import copy
import io
import zlib

import numpy as np
import pytest
import torch

from hsicomp.entropy.factorized import (
    MAX_ABS_LATENT,
    FactorizedEntropyModel,
    FrozenTables,
    decode_latents,
    encode_latents,
    quantize_pmf,
)

torch.set_num_threads(1)


def _model(channels: int = 4, seed: int = 0) -> FactorizedEntropyModel:
    """A model with perturbed weights so channels differ (widths, skew, offsets)."""
    torch.manual_seed(seed)
    model = FactorizedEntropyModel(channels)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return model


def _latents(tables: FrozenTables, shape: tuple[int, int], seed: int) -> np.ndarray:
    """Latents drawn from the tables, plus values outside every channel's support."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(tables.channels):
        f = tables.freqs[k][:-1].astype(np.float64)
        v = tables.lo[k] + rng.choice(f.size, size=shape, p=f / f.sum())
        out.append(v)
    y = np.stack(out).astype(np.int32)
    y[0, 0, 0] = tables.hi(0) + 1
    y[0, 0, 1] = tables.lo[0] - 1
    y[1, 1, 0] = MAX_ABS_LATENT
    y[1, 1, 1] = -MAX_ABS_LATENT
    y[-1, -1, -1] = tables.hi(tables.channels - 1) + 12345
    return y


def test_likelihoods_sum_to_one_per_channel():
    model = _model(5)
    ints = torch.arange(-400, 401, dtype=torch.float32)
    y = ints.reshape(1, 1, -1, 1).expand(1, 5, -1, 1).contiguous()
    lik = model(y)
    assert lik.shape == y.shape
    sums = lik.sum(dim=(0, 2, 3))
    assert torch.allclose(sums, torch.ones(5), atol=1e-3), sums


def test_likelihoods_finite_and_positive_in_the_tails():
    model = _model(3)
    y = torch.tensor([-1e4, -300.0, 0.0, 300.0, 1e4]).reshape(1, 1, 5, 1).expand(1, 3, 5, 1)
    lik = model(y.contiguous())
    assert torch.all(torch.isfinite(lik)) and torch.all(lik >= model.likelihood_bound)
    y2 = torch.zeros(2, 3, 4, 4, requires_grad=True)
    FactorizedEntropyModel.bits(model(y2)).backward()
    assert torch.all(torch.isfinite(y2.grad))


def test_quantize_pmf_exact_total_and_positive():
    pmf = np.array([0.0, 1e-12, 0.5, 0.3, 0.2 - 1e-12, 1e-9])
    for precision in (8, 16, 24):
        f = quantize_pmf(pmf, precision)
        assert f.dtype == np.int64 and f.min() >= 1 and int(f.sum()) == 1 << precision
    assert np.array_equal(quantize_pmf(pmf, 16), quantize_pmf(pmf.copy(), 16))
    with pytest.raises(ValueError):
        quantize_pmf(np.ones(200), 8)
    with pytest.raises(ValueError):
        quantize_pmf(np.array([0.5, np.nan]), 16)


@pytest.mark.parametrize("precision", [12, 16, 24])
def test_frozen_tables_are_valid(precision):
    model = _model(6)
    tables = model.freeze(precision=precision)
    assert tables.channels == 6 and tables.precision == precision
    for k in range(6):
        f = tables.freqs[k]
        assert f.min() >= 1 and int(f.sum()) == 1 << precision
        assert tables.hi(k) >= tables.lo[k]
        assert len(f) >= 2  # at least one in-range symbol and the escape


def test_support_covers_the_mass():
    model = _model(3)
    tail = 1e-6
    tables = model.freeze(tail_mass=tail)
    for k in range(3):
        lo, hi = tables.lo[k], tables.hi(k)
        pts = torch.tensor([lo - 0.5, lo + 0.5, hi - 0.5, hi + 0.5], dtype=torch.float64)
        logits = model.logits_cumulative(pts.reshape(1, 1, 4).expand(3, 1, 4).contiguous())[k, 0]
        below_lo, upto_lo = torch.sigmoid(logits[:2]).tolist()
        from_hi, above_hi = torch.sigmoid(-logits[2:]).tolist()
        assert below_lo <= tail / 2 < upto_lo  # lo is the first value needed
        assert above_hi <= tail / 2 < from_hi  # hi is the last value needed


def test_freeze_is_deterministic():
    model = _model(4, seed=3)
    a = model.freeze()
    b = model.freeze()
    c = copy.deepcopy(model).freeze()
    for t in (b, c):
        assert t.lo == a.lo and t.precision == a.precision
        assert all(np.array_equal(x, y) for x, y in zip(t.freqs, a.freqs, strict=True))


def test_tables_are_saved_with_the_model():
    model = _model(4)
    tables = model.freeze()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = FactorizedEntropyModel(4)
    assert not fresh.frozen
    with pytest.raises(RuntimeError):
        fresh.tables()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    loaded = fresh.tables()
    assert loaded.lo == tables.lo and loaded.precision == tables.precision
    assert all(np.array_equal(x, y) for x, y in zip(loaded.freqs, tables.freqs, strict=True))


def test_round_trip_with_escapes_and_size():
    tables = _model(4).freeze()
    y = _latents(tables, (24, 31), seed=1)
    data = encode_latents(y, tables)
    out = decode_latents(data, y.shape, tables)
    assert out.dtype == np.int32 and np.array_equal(out, y)
    ideal = tables.ideal_bits(y)
    bits = 8 * len(data)
    assert ideal - 8 <= bits <= 1.01 * ideal + 8 * 16, (bits, ideal)
    assert encode_latents(y, tables) == data
    assert encode_latents(y.astype(np.int64), tables) == data


def test_coder_uses_exactly_the_integer_frequencies():
    # Rare symbols with tiny frequencies: one unit of difference in what the coder assigns
    # would change their cost by >= log2(3/2) bits each, far above the tolerance.
    precision = 24
    freq = np.array([1, 2, 3, 5, (1 << precision) - 11 - 1, 1], dtype=np.int64)
    tables = FrozenTables(precision=precision, lo=(-2,), freqs=(freq,))
    y = np.tile(np.array([-2, -1, 0, 1], dtype=np.int32), 500).reshape(1, 40, 50)
    data = encode_latents(y, tables)
    ideal = tables.ideal_bits(y)
    assert abs(8 * len(data) - ideal) <= 8 * 16, (8 * len(data), ideal)
    assert np.array_equal(decode_latents(data, y.shape, tables), y)
    for precision in (12, 16):
        f16 = quantize_pmf(np.array([1e-9, 1e-6, 0.3, 0.7, 1e-6]), precision)
        t16 = FrozenTables(precision=precision, lo=(0,), freqs=(f16,))
        y16 = np.tile(np.array([0, 1, 2, 3, 4, -7], dtype=np.int32), 300).reshape(1, 30, 60)
        data16 = encode_latents(y16, t16)
        assert abs(8 * len(data16) - t16.ideal_bits(y16)) <= 8 * 16
        assert np.array_equal(decode_latents(data16, y16.shape, t16), y16)


def test_training_rate_matches_frozen_code_length():
    model = _model(4, seed=5)
    tables = model.freeze()
    torch.manual_seed(1)
    y = torch.round(torch.randn(1, 4, 20, 20) * 3)
    bits = FactorizedEntropyModel.bits(model(y)).item()
    y_int = y[0].to(torch.int64).numpy()
    ideal = tables.ideal_bits(y_int)
    assert abs(ideal - bits) <= 0.01 * bits + 2, (ideal, bits)
    assert abs(8 * len(encode_latents(y_int, tables)) - ideal) <= 0.01 * ideal + 128


def test_empty_latents_round_trip():
    tables = _model(2).freeze()
    y = np.zeros((2, 0, 5), dtype=np.int32)
    data = encode_latents(y, tables)
    assert decode_latents(data, (2, 0, 5), tables).shape == (2, 0, 5)


def test_bad_inputs_to_encoder():
    tables = _model(2).freeze()
    with pytest.raises(ValueError):
        encode_latents(np.zeros((3, 2, 2), dtype=np.int32), tables)
    with pytest.raises(ValueError):
        encode_latents(np.zeros((2, 4), dtype=np.int32), tables)
    with pytest.raises(ValueError):
        encode_latents(np.full((2, 2, 2), 0.5), tables)
    with pytest.raises(ValueError):
        encode_latents(np.full((2, 2, 2), MAX_ABS_LATENT + 1, dtype=np.int64), tables)


def test_truncated_or_garbled_streams_raise_value_error():
    tables = _model(3).freeze()
    y = _latents(tables, (16, 16), seed=2)
    data = encode_latents(y, tables)
    bad = [
        b"",
        data[:4],
        data[:-1],
        data[:-4],
        data + b"\x00\x00\x00\x00",
        bytes([data[0] + 1]) + data[1:],
        data[:20] + bytes([data[20] ^ 0x40]) + data[21:],
    ]
    for stream in bad:
        with pytest.raises(ValueError):
            decode_latents(stream, y.shape, tables)
    for shape in [(2, 16, 16), (3, 16), (3, -1, 16), (3, 1 << 14, 1 << 14), "abc"]:
        with pytest.raises(ValueError):
            decode_latents(data, shape, tables)  # type: ignore[arg-type]
    # A bigger shape than encoded: the words run out before the symbols do.
    with pytest.raises(ValueError):
        decode_latents(data, (3, 16, 17), tables)


def test_random_streams_with_valid_checksum_never_hang():
    tables = _model(3).freeze()
    rng = np.random.default_rng(7)
    for n in (1, 3, 40):
        words = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype("<u4").tobytes()
        stream = b"\x01" + zlib.crc32(words).to_bytes(4, "little") + words
        try:
            out = decode_latents(stream, (3, 8, 8), tables)
        except ValueError:
            continue
        assert out.shape == (3, 8, 8)
