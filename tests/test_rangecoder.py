"""Tests for the range coder core (``hsicomp.entropy.rangecoder``)."""

from __future__ import annotations

import numpy as np
import pytest

from hsicomp.entropy.adaptive.tables import _build_cdf
from hsicomp.entropy.rangecoder import (
    D_LOWER,
    D_POINT,
    D_POS,
    D_RANGE,
    D_SLOTS,
    E_LOWER,
    E_NINV,
    E_POS,
    E_RANGE,
    E_SLOTS,
    RC_FULL,
    decoder_start,
    encode_intervals,
    encoder_start,
    exhausted,
    num_words,
    seal,
    take,
)

TOTAL = 1 << 24


def _encoder() -> np.ndarray:
    rc = np.empty(E_SLOTS, dtype=np.uint64)
    encoder_start(rc)
    return rc


def _decode(words: np.ndarray, ivals: np.ndarray) -> bool:
    """Decode ``ivals`` from ``words``, checking that every quantile falls into its interval;
    returns whether the stream is exhausted afterwards."""
    rc = np.zeros(D_SLOTS, dtype=np.uint64)
    decoder_start(words, rc)
    lower, rng, point, pos = (int(rc[k]) for k in (D_LOWER, D_RANGE, D_POINT, D_POS))
    for cum, freq in ivals.T.tolist():
        scale = rng >> 24
        q = (point - lower) % 2**64 // scale
        assert cum <= q < cum + freq
        state = take(np.uint64(lower), np.uint64(rng), np.uint64(point), pos, words,
                     np.uint64(scale), cum, freq)
        lower, rng, point, pos = (int(v) for v in state)
    rc[[D_LOWER, D_RANGE, D_POINT, D_POS]] = lower, rng, point, pos
    return bool(exhausted(rc, words))


def test_matches_constriction() -> None:
    """The encoder writes constriction's words after every symbol, carries included, and
    the decoder reads them back."""
    constriction = pytest.importorskip("constriction")
    model = constriction.stream.model
    rng = np.random.default_rng(9)
    # skewed, flat and sparse token distributions, as the adaptive histograms produce them
    counts = [
        rng.geometric(p, size=127) * rng.integers(0, 2, size=127) for p in (0.5, 0.05, 0.002)
    ] + [np.eye(1, 127, 63, dtype=np.int64)[0] * 2**21 + 1]
    cdfs = np.zeros((len(counts), 128), dtype=np.int64)
    for h, cnt in enumerate(counts):
        _build_cdf(np.asarray(cnt, dtype=np.int64), cdfs[h])
    assert np.all(np.diff(cdfs, axis=1) >= 1) and np.all(cdfs[:, -1] == TOTAL)
    categorical = [model.Categorical(np.diff(c).astype(np.float64) - 1, perfect=False)
                   for c in cdfs]
    enc = constriction.stream.queue.RangeEncoder()
    rc = _encoder()
    out = np.zeros(4096, dtype=np.uint32)
    coded = []
    longest = 0  # most words held back for a pending carry
    for _ in range(3000):
        # quantile of the point where lower + range wraps around 2**64
        wrap = (-int(rc[E_LOWER])) % 2**64 // (int(rc[E_RANGE]) >> 24)
        if rc[E_NINV] and wrap < TOTAL and rng.random() < 0.9:
            # keep the interval across the wrap: the carry stays pending over more words
            h, s = 1, int(np.searchsorted(cdfs[1], wrap, side="right") - 1)
        elif rng.random() < 0.7:
            h = int(rng.integers(len(cdfs)))
            s = int(rng.integers(127)) if rng.random() < 0.2 else int(
                np.searchsorted(cdfs[h], rng.integers(TOTAL), side="right") - 1)
        else:
            h, s = -1, 0
        if h >= 0:
            enc.encode(np.array([s], dtype=np.int32), categorical[h])
            cum, freq = cdfs[h, s], cdfs[h, s + 1] - cdfs[h, s]
        else:
            size = int(rng.integers(2, 8193))
            v = int(rng.integers(size))
            enc.encode(np.array([v], dtype=np.int32), model.Uniform(),
                       np.array([size], dtype=np.int32))
            per = TOTAL // size
            cum, freq = v * per, per if v < size - 1 else TOTAL - v * per
        coded.append((cum, freq))
        encode_intervals(rc, out, np.array([[cum], [freq]], dtype=np.int64), 1)
        longest = max(longest, int(rc[E_NINV]))
        n = seal(rc, out)
        np.testing.assert_array_equal(out[:n], enc.get_compressed())
        assert num_words(rc) == n == enc.num_words()
    assert longest >= 3
    assert _decode(out[:n].copy(), np.array(coded, dtype=np.int64).T)


def test_round_trip_and_chunking() -> None:
    """Random intervals (down to one 2**-24) decode back; coding them in chunks of any size
    gives the same words as in one call."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 500):
        bits = rng.integers(0, 25, size=n)
        freq = np.maximum(1, rng.integers(0, TOTAL + 1, size=n) >> bits)
        cum = (rng.random(n) * (TOTAL - freq + 1)).astype(np.int64)
        ivals = np.stack([cum, freq]).astype(np.int64)
        rc = _encoder()
        out = np.empty(n + 2, dtype=np.uint32)
        encode_intervals(rc, out, ivals, n)
        nw = seal(rc, out)
        assert nw == num_words(rc)
        words = out[:nw].copy()
        assert _decode(words, ivals)
        # the same in chunks, sealing in between (sealing leaves the state alone)
        rc = _encoder()
        chunked = np.empty(n + 2, dtype=np.uint32)
        start = 0
        while start < n:
            stop = min(n, start + int(rng.integers(1, 9)))
            part = np.ascontiguousarray(ivals[:, start:stop])
            encode_intervals(rc, chunked, part, stop - start)
            seal(rc, chunked)
            start = stop
        np.testing.assert_array_equal(chunked[:seal(rc, chunked)], words)


def test_empty_stream() -> None:
    rc = _encoder()
    assert rc[E_RANGE] == RC_FULL and rc[E_POS] == 0
    out = np.empty(2, dtype=np.uint32)
    assert seal(rc, out) == 0 == num_words(rc)
    words = np.empty(0, dtype=np.uint32)
    assert _decode(words, np.empty((2, 0), dtype=np.int64))


def test_leftover_words_are_not_exhausted() -> None:
    """Two words more than the encoder wrote are never all read (one may be)."""
    rng = np.random.default_rng(5)
    for n in (1, 2, 40):
        freq = rng.integers(1, 1 << 12, size=n)
        ivals = np.stack([rng.integers(0, TOTAL - freq + 1), freq]).astype(np.int64)
        rc = _encoder()
        out = np.empty(n + 2, dtype=np.uint32)
        encode_intervals(rc, out, ivals, n)
        words = out[:seal(rc, out)].copy()
        assert _decode(words, ivals)
        assert not _decode(np.append(words, np.uint32([7, 0])), ivals)
