"""Fixed-point auto-regressive probability model (ARM) and the range coding of its latents.

Latent grids
    A grid is ``(channels, h, w)`` integers with ``|v| <= LATENT_MAX``, coded channel by
    channel in raster order. It is held zero-padded as ``(P + channels, PAD + h, w + 2 PAD)``
    (``P`` channels, ``PAD`` rows and ``PAD`` columns on each side of zeros), latent
    ``(c, y, x)`` at ``(P + c, PAD + y, PAD + x)``; the context of a latent is the values at
    the offsets ``(dc, dy, dx)`` of :func:`context_offsets`: causal spatial neighbours in
    the same channel, then the same position in up to ``P`` earlier channels.

Integer ARM (the same on every machine)
    An MLP ``context -> hidden -> hidden -> (mu, log2 scale)`` with ReLU, run in int64:
    weights ``W`` and biases ``B`` are integers with steps ``2**-kw`` and ``2**-kb``;
    activations carry ``FRAC_BITS`` fraction bits. A layer computes
    ``a = (sum_j W[i, j] x[j] + (B[i] << (kw + FRAC_BITS - kb))) >> kw`` (arithmetic shift,
    i.e. floor), followed by ReLU on the hidden layers. The two outputs, in units of
    ``2**-FRAC_BITS``, pick a table of :func:`hsicomp.entropy.laplace_tables.latent_cdfs`:
    the mean is clamped to ``+-LATENT_MAX``, its floor shifts the symbol and its fraction
    (``NMU`` buckets) and the rounded log2 scale (``SCALE_STEPS`` per octave, clamped to the
    table range) select the row.

Range coding
    The symbols are coded with the range coder kernels of :mod:`hsicomp.entropy.rangecoder`
    (the 32-bit words of constriction's ``RangeEncoder``, 24-bit frequencies). The encoder
    computes every interval in one pass (it knows all latents); the decoder runs the ARM
    latent by latent on what it has decoded, in one compiled call per grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsicomp.entropy import laplace_tables, rangecoder
from hsicomp.entropy.laplace_tables import (
    LATENT_MAX,
    LOG2_SCALE_MIN,
    NMU,
    NSCALE,
    PRECISION,
    SCALE_STEPS,
)
from hsicomp.entropy.rangecoder import (
    D_LOWER,
    D_POINT,
    D_POS,
    D_RANGE,
    D_SLOTS,
    E_SLOTS,
    RC_PRECISION,
    decoder_start,
    encoder_start,
    exhausted,
    seal,
    take,
)
from hsicomp.entropy.rangecoder import encode_intervals as _encode_words
from hsicomp.numba_cache import cached_njit

__all__ = [
    "FRAC_BITS",
    "PAD",
    "IntegerArm",
    "RangeDecoder",
    "context_offsets",
    "encode_intervals",
    "grid_intervals",
    "pad_grid",
    "seal_intervals",
    "symbol_intervals",
]

#: Fraction bits of the ARM's fixed-point activations.
FRAC_BITS = 8
#: Rows above and columns either side a padded grid carries.
PAD = 3
#: Most spatial context positions.
MAX_CONTEXT = 24

_MU_SHIFT = FRAC_BITS - (NMU.bit_length() - 1)  # fraction bits below the mean buckets
_SCALE_SHIFT = FRAC_BITS - (SCALE_STEPS.bit_length() - 1)
_OK, _INVALID, _CORRUPT = 0, -1, -2
_TOTAL = 1 << PRECISION
# Compiled code takes in the range coder's functions and the Laplace tables' constants: the
# cache is keyed by all three files.
_SOURCES = (Path(__file__), Path(rangecoder.__file__), Path(laplace_tables.__file__))
_jit = cached_njit(_SOURCES, nogil=True, error_model="numpy")
_inline = cached_njit(_SOURCES, nogil=True, error_model="numpy", inline="always")


def context_offsets(spatial: int, channel: int) -> np.ndarray:
    """Context offsets ``(dc, dy, dx)``, shape ``(spatial + channel, 3)``.

    The ``spatial`` causal neighbours nearest to the latent (rows above within ``PAD``,
    then the left of the same row; by distance, ties by row then column) followed by the
    same position in the ``channel`` previous channels.
    """
    if not 1 <= spatial <= MAX_CONTEXT or not 0 <= channel <= 16:
        raise ValueError(f"context must be 1..{MAX_CONTEXT} spatial, 0..16 channel positions")
    cand = [(dy, dx) for dy in range(-PAD, 1) for dx in range(-PAD, PAD + 1)
            if dy < 0 or dx < 0]
    cand.sort(key=lambda p: (p[0] ** 2 + p[1] ** 2, -p[0], p[1]))
    rows = [(0, dy, dx) for dy, dx in cand[:spatial]]
    rows += [(-k, 0, 0) for k in range(1, channel + 1)]
    return np.array(rows, dtype=np.int64)


def pad_grid(grid: np.ndarray, channel: int) -> np.ndarray:
    """The zero-padded int64 layout of a ``(channels, h, w)`` grid (see module doc)."""
    c, h, w = grid.shape
    out = np.zeros((channel + c, PAD + h, w + 2 * PAD), dtype=np.int64)
    out[channel:, PAD:, PAD:PAD + w] = grid
    return out


class IntegerArm:
    """Integer ARM weights: per layer ``(W int64 (out, in), kw, B int64 (out,), kb)``."""

    def __init__(self, layers: list[tuple[np.ndarray, int, np.ndarray, int]]) -> None:
        if len(layers) != 3:
            raise ValueError("the ARM has exactly three layers")
        self.w = tuple(np.ascontiguousarray(w, dtype=np.int64) for w, _, _, _ in layers)
        self.b = tuple(np.ascontiguousarray(b, dtype=np.int64) for _, _, b, _ in layers)
        shifts = []
        for _, kw, _, kb in layers:
            if not 0 <= kw <= 30 or not 0 <= kb <= kw + FRAC_BITS:
                raise ValueError(f"bad ARM weight steps 2**-{kw}, 2**-{kb}")
            shifts += [kw, kw + FRAC_BITS - kb]
        self.shifts = np.array(shifts, dtype=np.int64)

    def args(self) -> tuple:
        """Arguments of the kernels, in their order."""
        return (*self.w, *self.b, self.shifts)


@_inline
def _layer(x, w, b, kw, bs, relu, out):
    for i in range(w.shape[0]):
        acc = b[i] << bs
        for j in range(w.shape[1]):
            acc += w[i, j] * x[j]
        acc >>= kw
        out[i] = max(acc, 0) if relu else acc


@_inline
def _predict(pad, oc, oy, ox, c, y, x, w1, w2, w3, b1, b2, b3, sh, ctx, h1, h2, o):
    """Table index and floor of the mean for latent (c, y, x) of a padded grid."""
    for j in range(oc.size):
        ctx[j] = pad[c + oc[j], y + oy[j], x + ox[j]] << FRAC_BITS
    _layer(ctx, w1, b1, sh[0], sh[1], True, h1)
    _layer(h1, w2, b2, sh[2], sh[3], True, h2)
    _layer(h2, w3, b3, sh[4], sh[5], False, o)
    lim = np.int64(LATENT_MAX) << FRAC_BITS
    mu = min(max(o[0], -lim), lim)
    mf = mu >> FRAC_BITS
    fi = (mu & ((1 << FRAC_BITS) - 1)) >> _MU_SHIFT
    si = (o[1] - (np.int64(LOG2_SCALE_MIN) << FRAC_BITS) + (1 << (_SCALE_SHIFT - 1))) \
        >> _SCALE_SHIFT
    si = min(max(si, 0), NSCALE - 1)
    return si * NMU + fi, mf


@_jit
def _grid_intervals(pad, nch, p, oc, oy, ox, w1, w2, w3, b1, b2, b3, sh, cdf, ivals, tables):
    """Intervals (cum, freq) and table indices of every latent of a padded grid."""
    h = pad.shape[1] - PAD
    w = pad.shape[2] - 2 * PAD
    ctx = np.empty(oc.size, dtype=np.int64)
    h1 = np.empty(w1.shape[0], dtype=np.int64)
    h2 = np.empty(w2.shape[0], dtype=np.int64)
    o = np.empty(2, dtype=np.int64)
    k = 0
    for c in range(nch):
        for y in range(h):
            for x in range(w):
                t, mf = _predict(pad, oc, oy, ox, c + p, y + PAD, x + PAD, w1, w2, w3, b1, b2,
                                 b3, sh, ctx, h1, h2, o)
                s = pad[c + p, y + PAD, x + PAD] - mf + 2 * LATENT_MAX
                ivals[0, k] = cdf[t, s]
                ivals[1, k] = cdf[t, s + 1] - cdf[t, s]
                tables[k] = t
                k += 1


@_jit
def _decode_grid(pad, nch, p, oc, oy, ox, w1, w2, w3, b1, b2, b3, sh, cdf, tables, rc, words):
    """Decode a grid into its padded layout; returns a status code."""
    h = pad.shape[1] - PAD
    w = pad.shape[2] - 2 * PAD
    ctx = np.empty(oc.size, dtype=np.int64)
    h1 = np.empty(w1.shape[0], dtype=np.int64)
    h2 = np.empty(w2.shape[0], dtype=np.int64)
    o = np.empty(2, dtype=np.int64)
    lower = rc[D_LOWER]
    rng = rc[D_RANGE]
    point = rc[D_POINT]
    pos = np.int64(rc[D_POS])
    nsym = cdf.shape[1] - 1
    k = 0
    status = _OK
    for c in range(nch):
        for y in range(h):
            for x in range(w):
                t, mf = _predict(pad, oc, oy, ox, c + p, y + PAD, x + PAD, w1, w2, w3, b1, b2,
                                 b3, sh, ctx, h1, h2, o)
                scale = rng >> RC_PRECISION
                q = np.int64((point - lower) // scale)
                if q >= _TOTAL:
                    status = _INVALID
                    break
                lo, hi = 0, nsym  # cdf[t, lo] <= q < cdf[t, hi]
                while hi - lo > 1:
                    mid = (lo + hi) >> 1
                    if cdf[t, mid] <= q:
                        lo = mid
                    else:
                        hi = mid
                lower, rng, point, pos = take(lower, rng, point, pos, words, scale,
                                              cdf[t, lo], cdf[t, lo + 1] - cdf[t, lo])
                v = lo - 2 * LATENT_MAX + mf
                if v < -LATENT_MAX or v > LATENT_MAX:
                    status = _CORRUPT
                    break
                pad[c + p, y + PAD, x + PAD] = v
                tables[k] = t
                k += 1
            if status != _OK:
                break
        if status != _OK:
            break
    rc[D_LOWER] = lower
    rc[D_RANGE] = rng
    rc[D_POINT] = point
    rc[D_POS] = np.uint64(pos)
    return status


@_jit
def _decode_symbols(cdf, n, out, rc, words):
    """Decode n symbols of one cumulative table into out; returns a status code."""
    lower = rc[D_LOWER]
    rng = rc[D_RANGE]
    point = rc[D_POINT]
    pos = np.int64(rc[D_POS])
    nsym = cdf.size - 1
    status = _OK
    for k in range(n):
        scale = rng >> RC_PRECISION
        q = np.int64((point - lower) // scale)
        if q >= _TOTAL:
            status = _INVALID
            break
        lo, hi = 0, nsym
        while hi - lo > 1:
            mid = (lo + hi) >> 1
            if cdf[mid] <= q:
                lo = mid
            else:
                hi = mid
        lower, rng, point, pos = take(lower, rng, point, pos, words, scale, cdf[lo],
                                      cdf[lo + 1] - cdf[lo])
        out[k] = lo
    rc[D_LOWER] = lower
    rc[D_RANGE] = rng
    rc[D_POINT] = point
    rc[D_POS] = np.uint64(pos)
    return status


def grid_intervals(grid: np.ndarray, arm: IntegerArm, offsets: np.ndarray,
                   cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coding intervals ``(2, n)`` and table indices ``(n,)`` of a ``(channels, h, w)`` grid.

    ``grid`` must hold integers with ``|v| <= LATENT_MAX``.
    """
    g = np.asarray(grid)
    if g.ndim != 3 or (g.size and int(np.abs(g).max()) > LATENT_MAX):
        raise ValueError(f"latents must be (channels, h, w) within +-{LATENT_MAX}")
    p = int(-offsets[:, 0].min())
    pad = pad_grid(g, p)
    ivals = np.empty((2, g.size), dtype=np.int64)
    tables = np.empty(g.size, dtype=np.int64)
    _grid_intervals(pad, g.shape[0], p, *offsets.T.copy(), *arm.args(), cdf, ivals, tables)
    return ivals, tables


def symbol_intervals(symbols: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    """Coding intervals ``(2, n)`` of symbols ``0 .. len(cdf) - 2`` under one table."""
    s = np.asarray(symbols, dtype=np.int64)
    return np.stack([cdf[s], cdf[s + 1] - cdf[s]])


def encode_intervals(ivals: np.ndarray) -> bytes:
    """Range-code intervals ``(2, n)`` of ``2**24``; the stream's 32-bit words (LE)."""
    iv = np.ascontiguousarray(ivals, dtype=np.int64)
    rc = np.empty(E_SLOTS, dtype=np.uint64)
    encoder_start(rc)
    out = np.empty(iv.shape[1] + 16, dtype=np.uint32)
    _encode_words(rc, out, iv, iv.shape[1])
    n = seal(rc, out)
    return out[:n].astype("<u4").tobytes()


def seal_intervals(parts: list[np.ndarray]) -> bytes:
    """:func:`encode_intervals` of several interval arrays one after the other."""
    if not parts:
        return b""
    return encode_intervals(np.concatenate(parts, axis=1))


class RangeDecoder:
    """Decoder of an :func:`encode_intervals` stream; raises ``ValueError`` on bad data."""

    def __init__(self, data: bytes) -> None:
        if len(data) % 4:
            raise ValueError(f"stream of {len(data)} bytes is not whole 32-bit words")
        self.words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        self.rc = np.zeros(D_SLOTS, dtype=np.uint64)
        decoder_start(self.words, self.rc)

    def symbols(self, cdf: np.ndarray, n: int) -> np.ndarray:
        """Decode ``n`` symbols of one cumulative table."""
        out = np.empty(n, dtype=np.int64)
        if _decode_symbols(np.ascontiguousarray(cdf, dtype=np.int64), n, out, self.rc,
                           self.words) != _OK:
            raise ValueError("invalid range coder data")
        return out

    def grid(self, shape: tuple[int, int, int], arm: IntegerArm, offsets: np.ndarray,
             cdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decode a ``(channels, h, w)`` grid; returns (latents int64, table indices)."""
        p = int(-offsets[:, 0].min())
        c, h, w = shape
        pad = np.zeros((p + c, PAD + h, w + 2 * PAD), dtype=np.int64)
        tables = np.empty(c * h * w, dtype=np.int64)
        status = _decode_grid(pad, c, p, *offsets.T.copy(), *arm.args(), cdf, tables, self.rc,
                              self.words)
        if status == _INVALID:
            raise ValueError("invalid range coder data")
        if status == _CORRUPT:
            raise ValueError(f"decoded latent outside +-{LATENT_MAX}")
        return pad[p:, PAD:, PAD:PAD + w].copy(), tables

    def finished(self) -> bool:
        """Whether every word was used (constriction's ``maybe_exhausted``)."""
        return bool(exhausted(self.rc, self.words))
