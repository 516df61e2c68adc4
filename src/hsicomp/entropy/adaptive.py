"""Context-adaptive range coder for signed prediction residuals (``arith``).

Codes residuals ``e = x - p`` of a cube with shape (bands I, rows T, cols C) one band-line
(all C columns of band i on row t) at a time, in BIL order (row, band, column). Every model
parameter is computed with integer arithmetic from residuals both sides already know, so
encoder and decoder agree bit for bit on any machine. The symbols are coded with the range
coder of :mod:`hsicomp.entropy.rangecoder` (24-bit probabilities, 32-bit words); model
building and coding of a whole band-line (or cube) run in one compiled numba call that
releases the GIL.

>>> import numpy as np
>>> predictions = np.full((2, 3, 4), 100, dtype=np.int64)
>>> residuals = np.array([[[0, 1, -1, 2], [3, 0, 0, -2], [1, 1, 0, 0]],
...                       [[0, 0, 1, 1], [-1, 0, 2, 0], [0, -3, 0, 1]]])
>>> data = encode_cube(residuals, predictions, max_value=4095)
>>> decode_cube(data, predictions, max_value=4095).tolist() == residuals.tolist()
True

Symbols
    A residual is flipped (``e' = s * e``, ``s = +-1``, see below) and split into a signed
    token and an optional mantissa. Magnitudes ``m = |e'| < 16`` are their own token; larger
    magnitudes with bit length ``b`` get token ``16 + 4 (b - 5) + f``, where ``f`` are the
    two bits below the leading one, followed by the ``b - 3`` low bits as a mantissa. The
    token alphabet is ``-63..63`` (127 symbols), enough for any ``|e| < 2**16``, so no
    escape symbol is needed. The mantissa is coded with a uniform model over the values of
    the token's bucket that lie inside the residual's real range ``[-p, max_value - p]``
    (nothing is coded when only one value is left); as in constriction's ``Uniform(n)``,
    each of the ``n`` values gets ``2**24 // n`` and the last one the rest of ``2**24``.

Context model (per sample of band-line (t, i), column c; columns are coded in order)
    * ``A = 2|e[i-1,t,c]| + |e[i-1,t,c-1]| + |e[i-1,t,c+1]|`` (previous band, same row) and
      ``B``, the same over band i on row t - 1 (edge columns are repeated); when one of the
      two is missing (band 0 or row 0) it takes the other's value. ``L = 3|e[i,t,c-1]| +
      |e[i,t,c-2]|`` from the samples to the left on the same band-line (in column 1
      ``|e[i,t,0]|`` stands for the missing ``|e[i,t,-1]|``; ``L = (A + B) // 2`` in
      column 0).
    * ``R = 4 * mean |e|`` of band i over the previous rows, a running mean kept as an
      integer accumulator and counter that are halved every ``_BAND_LIMIT`` samples.
    * The context is ``(q(A + B + L), r(A, B), r(2L, A + B), r(3R, A + B + L))``: ``q`` is
      a log2 quantiser with two steps per octave (40 levels) and ``r`` a five-level ratio
      quantiser, which gives 5000 contexts. Each context learns the mean ``|e|`` of its
      samples with an integer accumulator and counter (halved every 64 samples, CCSDS-123
      style); that mean, quantised on a log2 scale with two steps per octave (48 scales
      from 1/256 up), picks the token distribution's scale.
    * Sign: the signs (-, 0, +) of ``e[i-1,t,c]``, ``e[i,t-1,c]``, ``e[i,t-1,c+1]``,
      ``e[i,t-1,c-1]`` and ``e[i,t,c-1]`` (0 where missing) form one of 243 sign patterns.
      Each pattern counts the positive and negative residuals coded under it (integers,
      2 per sample, started at 4 and 4, halved when their sum passes 2**12). The flip is
      ``s = -1`` when the pattern's negative count is the larger (so the likelier sign is
      always coded as +), and the share ``big / (pos + neg)`` of the larger count,
      quantised at 0.54, 0.60, 0.68 and 0.80 (integer comparisons), splits every scale in
      five, for 240 token distributions.
    * Each distribution is an adaptive histogram (integer counts, +32 per sample, halved
      when the total passes 2**21), started from a two-sided geometric prior with the
      scale's mean worth 128 samples. The prior is computed with Python integers
      (fixed-point square root and powers). Counts become frequencies ``f >= 1`` summing
      to exactly 2**24 by integer division (the same frequencies constriction's
      ``Categorical(f - 1, perfect=False)`` quantises to). A distribution is rebuilt after
      a band-line once its new samples (at least 8) carry 1/32 of its weight.

Columns are coded in order, each sample's token directly followed by its mantissa, so the
left neighbours are known to the decoder when it builds a sample's context. All learnt
statistics (context means, sign-pattern counts, histograms and distributions, band means)
are those from before the band-line: the line's samples update them once it is coded.
The stream is a version byte (2; streams of another version are refused with a
ValueError), the number of 32-bit words (uint32, little endian) and the words (little
endian).

The model has to learn its statistics: on tiny inputs of i.i.d. noise (about 10**4
samples) that costs a few hundredths of a bit per sample, enough to trail the one-parameter
Golomb coder there; on larger or spatially/spectrally structured inputs it is ahead.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros

from hsicomp.entropy.rangecoder import (
    D_LOWER,
    D_POINT,
    D_POS,
    D_RANGE,
    D_SLOTS,
    E_NINV,
    E_POS,
    E_SLOTS,
    RC_PRECISION,
    decoder_start,
    encode_intervals,
    encoder_start,
    exhausted,
    num_words,
    seal,
    take,
)

__all__ = [
    "ResidualDecoder",
    "ResidualEncoder",
    "decode_cube",
    "encode_cube",
]

_VERSION = 2
_HEADER = 5  # version byte + uint32 word count

_NTOK = 64  # magnitude tokens 0..63
_NSYM = 2 * _NTOK - 1  # signed tokens -63..63, stored as 0..126
_ZERO = _NTOK - 1  # symbol of e' == 0
_PRECISION = int(RC_PRECISION)  # frequencies sum to 2**24
_TOTAL = 1 << _PRECISION

_NQ = 40  # levels of q(A + B + L); A + B + L <= 12 * 65535 < 2**20
_NR = 5  # levels of a ratio quantiser
_NCTX = _NQ * _NR * _NR * _NR
_NPAT = 243  # sign patterns: signs of five neighbours
_PAT_INIT = 4  # initial positive and negative counts of a sign pattern
_PAT_LIMIT = 1 << 12  # a sign pattern's counts are halved above this total
_CTX_INIT_N = 4  # initial counter of a context's mean
_CTX_LIMIT = 64  # a context's accumulator and counter are halved at this count
_NSCALE = 48  # scales: log2 steps of mean |e| in 1/256 units, two per octave
_NSIGN = 5  # sign-confidence levels
_NHIST = _NSCALE * _NSIGN
_INC = 32  # histogram increment per sample
_PRIOR_WEIGHT = 4096  # histogram weight of the prior (128 samples)
_HIST_LIMIT = 1 << 21  # histogram counts are halved above this total
_REBUILD_MIN = 8  # least new samples before a distribution is rebuilt
_REBUILD_FRACTION = 32  # rebuilt once the new samples reach 1/32 of the total weight
_BAND_LIMIT = 1 << 14  # band running mean: halved at this many samples
_LUT_SHIFT = 16  # decoder lookup tables: one entry per 2**16 of 2**24
_LUT_SIZE = 1 << (_PRECISION - _LUT_SHIFT)

# status codes of the decoding kernels
_OK, _BAD_PREDICTION, _CORRUPT, _INVALID, _LEFTOVER = 0, -1, -2, -3, -4
_DECODE_ERRORS = {
    _BAD_PREDICTION: "a prediction is outside [0, max_value]",
    _CORRUPT: "corrupt stream: decoded residual outside its range",
    _INVALID: "corrupt stream: invalid range coder data",
    _LEFTOVER: "corrupt stream: data left after the last band-line",
}

_jit = njit(cache=True, nogil=True, error_model="numpy")
_inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")


# --------------------------------------------------------------------------- tables


def _scale_mean(s: int) -> tuple[int, int]:
    """Nominal mean |e| of scale ``s`` as a fraction (numerator, denominator)."""
    if s < 2:
        return 2 * s + 1, 512  # 0.5/256 and 1.5/256
    bl, half = s // 2 + 1, s & 1
    return (5 + 2 * half) << (bl - 2), 512  # bucket centre (2.5 + half) * 2**(bl-2) / 256


def _fp_pow(x: int, n: int, bits: int) -> int:
    """``x**n`` for a fixed-point ``x`` with ``bits`` fraction bits (floored each step)."""
    result = 1 << bits
    while n:
        if n & 1:
            result = (result * x) >> bits
        x = (x * x) >> bits
        n >>= 1
    return result


def _token_buckets() -> list[tuple[int, int]]:
    """(lowest magnitude, width) of each magnitude token."""
    out = [(m, 1) for m in range(16)]
    for b in range(5, 17):
        for f in range(4):
            out.append(((4 | f) << (b - 3), 1 << (b - 3)))
    return out


@lru_cache(maxsize=1)
def _prior_counts() -> np.ndarray:
    """Initial histogram counts (scales x symbols), from a two-sided geometric law.

    For mean ``mu = a / b`` the law ``P(e) ~ theta**|e|`` has
    ``theta = (sqrt(a**2 + b**2) - b) / a``; everything is done in 64-bit fixed point with
    Python integers, so the table is the same on every machine.
    """
    bits = 64
    one = 1 << bits
    buckets = _token_buckets()
    table = np.zeros((_NSCALE, _NSYM), dtype=np.int64)
    for s in range(_NSCALE):
        a, b = _scale_mean(s)
        theta = (math.isqrt((a * a + b * b) << (2 * bits)) - (b << bits)) // a
        # mass of a bucket [lo, lo + w): theta**lo * (1 - theta**w), one sign
        mass = [_fp_pow(theta, lo, bits) * (one - _fp_pow(theta, w, bits)) for lo, w in buckets]
        # P(0) ~ mass[0]; each sign of a nonzero token t has mass[t]
        total = mass[0] + 2 * sum(mass[1:])
        for t, mt in enumerate(mass):
            c = (2 * _PRIOR_WEIGHT * mt + total) // (2 * total)  # rounded
            table[s, _ZERO + t] = c
            table[s, _ZERO - t] = c
    return np.repeat(table, _NSIGN, axis=0)


@_jit
def _build_cdf(counts, cdf):
    """Cumulative frequencies of counts: ``f >= 1`` summing to 2**24, ``cdf[0] = 0``.

    ``f - 1`` is the share of ``2**24 - n`` proportional to the count (floored), and the
    most frequent symbol (the first of equals) gets what the flooring left over.
    """
    n = counts.size
    tot = np.int64(0)
    best = 0
    for k in range(n):
        tot += counts[k]
        if counts[k] > counts[best]:
            best = k
    free = np.int64(_TOTAL - n)
    inv = 1.0 / np.float64(tot)
    used = np.int64(0)
    for k in range(n):
        # floor(counts[k] * free / tot) from a float estimate, corrected to be exact
        x = counts[k] * free
        w = np.int64(np.float64(x) * inv)
        if w * tot > x:
            w -= 1
        elif (w + 1) * tot <= x:
            w += 1
        cdf[k + 1] = w + 1
        used += w
    cdf[best + 1] += free - used
    cdf[0] = 0
    for k in range(n):
        cdf[k + 1] += cdf[k]


@_jit
def _build_lut(cdf, lut):
    """Decoding shortcut: ``lut[b]`` is the symbol whose interval holds ``b << _LUT_SHIFT``."""
    s = 0
    for b in range(lut.size):
        q = b << _LUT_SHIFT
        while cdf[s + 1] <= q:
            s += 1
        lut[b] = s


@lru_cache(maxsize=1)
def _initial_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prior histogram counts, their cumulative frequencies and lookup tables (read-only)."""
    counts = _prior_counts()
    cdf = np.empty((_NHIST, _NSYM + 1), dtype=np.int64)
    lut = np.empty((_NHIST, _LUT_SIZE), dtype=np.uint8)
    for h in range(_NHIST):
        _build_cdf(counts[h], cdf[h])
        _build_lut(cdf[h], lut[h])
    for table in (counts, cdf, lut):
        table.flags.writeable = False
    return counts, cdf, lut


# --------------------------------------------------------------------------- model kernels
#
# Model state, shared by encoder and decoder (int64 unless noted):
#   rows (2, I, C): |e| and e of the last coded row of every band
#   band (I, 2): running sum of |e| and sample count per band
#   cstat (_NCTX + _NPAT, 2): context accumulator (16 |e| per sample) and counter, then
#       the positive and negative counts (2 per sample) of every sign pattern
#   hist (_NHIST, _NSYM + 2): token counts, then their total and samples since the rebuild
#   cdf (_NHIST, _NSYM + 1): cumulative frequencies each distribution codes with
#   lut (_NHIST, 256) uint8: decoder lookup tables of the cdfs (no rows in an encoder)
# Per-line scratch:
#   work (7, C): A, B and the partial sign pattern of every column (from the previous band
#       and row), then per coded sample its distribution, context, sign pattern and symbol
#   slots (_NHIST,): marks of the distributions a line used, all zero between lines
#   ivals (2, 2 C): the encoder's intervals (cumulative frequency, frequency) of a line

_W_A, _W_B, _W_PAT0, _W_HIST, _W_CTX, _W_PAT, _W_SYM = range(7)
_H_TOT, _H_PEND = _NSYM, _NSYM + 1


@_inline
def _bit_length(v):
    """Bit length of 0 <= v < 2**63."""
    return 64 - np.int64(leading_zeros(np.uint64(v)))


@_inline
def _log_level(v):
    """Log2 quantiser with two steps per octave: 0, 1, 2, 3, 4-5, 6-7, 8-11, ..."""
    if v < 2:
        return v
    bl = _bit_length(v)
    return 2 * bl - 2 + ((v >> (bl - 2)) & 1)


@_inline
def _ratio(a, b):
    """Five-level quantiser of a / b (integers >= 0)."""
    if 4 * a <= b:
        return 0
    if 3 * a <= 2 * b:
        return 1
    if 4 * b <= a:
        return 4
    if 3 * b <= 2 * a:
        return 3
    return 2


@_jit
def _prepare(t, i, rows, work):
    """A, B and the partial sign pattern of every column of band-line (t, i)."""
    ncol = rows.shape[2]
    mag = rows[0]
    sgn = rows[1]
    for c in range(ncol):
        cl = c - 1 if c > 0 else 0
        cr = c + 1 if c < ncol - 1 else ncol - 1
        a = 0
        if i > 0:
            a = 2 * mag[i - 1, c] + mag[i - 1, cl] + mag[i - 1, cr]
        if t > 0:
            b = 2 * mag[i, c] + mag[i, cl] + mag[i, cr]
            if i == 0:
                a = b
        else:
            b = a
        # signs (0, 1, 2 for -, 0, +; 1 where missing) of e[i-1,t,c], e[i,t-1,c],
        # e[i,t-1,c+1] and e[i,t-1,c-1]; the left neighbour's is added while coding
        z = 1
        if i > 0:
            z = np.sign(sgn[i - 1, c]) + 1
        if t > 0:
            z = z * 3 + np.sign(sgn[i, c]) + 1
            z = z * 3 + (np.sign(sgn[i, c + 1]) + 1 if c < ncol - 1 else 1)
            z = z * 3 + (np.sign(sgn[i, c - 1]) + 1 if c > 0 else 1)
        else:
            z = z * 27 + 13
        work[_W_A, c] = a
        work[_W_B, c] = b
        work[_W_PAT0, c] = z


@_inline
def _context(c, a, b, l1, l2, r4):
    """Context of column c from A, B, the left magnitudes l1 = |e[c-1]|, l2 = |e[c-2]| and
    the band's 4 * mean |e| (r4)."""
    lft = 3 * l1 + l2 if c > 0 else (a + b) >> 1
    total = a + b + lft
    return ((_log_level(total) * _NR + _ratio(a, b)) * _NR + _ratio(2 * lft, a + b)) * _NR \
        + _ratio(3 * r4, total)


@_inline
def _distribution(acc, cnt, pos, neg):
    """Distribution of a sample from its context's accumulator and counter and its sign
    pattern's counts."""
    # scale: the context's mean |e| in 1/256 units, two steps per octave (the floor
    # division is exact in float64 for a numerator < 2**31 and a counter < 2**7)
    s = _log_level(np.int64(np.float64(acc * 16) / np.float64(cnt)))
    if s >= _NSCALE:
        s = _NSCALE - 1
    big = max(pos, neg)
    tot = pos + neg
    sc = np.int64(100 * big >= 54 * tot) + np.int64(100 * big >= 60 * tot) \
        + np.int64(100 * big >= 68 * tot) + np.int64(100 * big >= 80 * tot)
    return s * _NSIGN + sc


@_jit
def _finish_line(i, res, rows, band, cstat, hist, cdf, lut, work, slots):
    """Learn from the coded band-line and rebuild the distributions that are due."""
    ncol = res.size
    line_sum = 0
    pstat = cstat[_NCTX:]
    for c in range(ncol):
        e = np.int64(res[c])
        m = abs(e)
        line_sum += m
        rows[0, i, c] = m
        rows[1, i, c] = e
        z = work[_W_PAT, c]
        if e > 0:
            pstat[z, 0] += 2
        elif e < 0:
            pstat[z, 1] += 2
        if pstat[z, 0] + pstat[z, 1] > _PAT_LIMIT:
            pstat[z, 0] = (pstat[z, 0] + 1) >> 1
            pstat[z, 1] = (pstat[z, 1] + 1) >> 1
        k = work[_W_CTX, c]
        cstat[k, 0] += 16 * m
        cstat[k, 1] += 1
        if cstat[k, 1] >= _CTX_LIMIT:
            cstat[k, 0] = (cstat[k, 0] + 1) >> 1
            cstat[k, 1] = (cstat[k, 1] + 1) >> 1
        h = work[_W_HIST, c]
        hist[h, work[_W_SYM, c]] += _INC
        hist[h, _H_TOT] += _INC
        hist[h, _H_PEND] += 1
        if hist[h, _H_TOT] > _HIST_LIMIT:
            tot = 0
            for j in range(_NSYM):
                hist[h, j] = (hist[h, j] + 1) >> 1
                tot += hist[h, j]
            hist[h, _H_TOT] = tot
        slots[h] = 1
    band[i, 0] += line_sum
    band[i, 1] += ncol
    if band[i, 1] >= _BAND_LIMIT:
        band[i, 0] = (band[i, 0] + 1) >> 1
        band[i, 1] = (band[i, 1] + 1) >> 1
    for c in range(ncol):
        h = work[_W_HIST, c]
        if slots[h] == 0:
            continue
        slots[h] = 0
        pend = hist[h, _H_PEND]
        if pend >= _REBUILD_MIN and pend * _INC * _REBUILD_FRACTION >= hist[h, _H_TOT]:
            hist[h, _H_PEND] = 0
            _build_cdf(hist[h, :_NSYM], cdf[h])
            if lut.shape[0]:
                _build_lut(cdf[h], lut[h])


@_inline
def _token(m):
    """(token, mantissa width in bits, bucket low end) of a magnitude < 2**16."""
    if m < 16:
        return m, 0, m
    b = _bit_length(m)
    f = (m >> (b - 3)) & 3
    return 16 + 4 * (b - 5) + f, b - 3, (4 | f) << (b - 3)


@_inline
def _r4(band, i):
    """4 * mean |e| of band i so far (0 before its first line)."""
    return (4 * band[i, 0]) // band[i, 1] if band[i, 1] > 0 else 0


@_jit
def _encode_line(t, i, res, pred, max_value, rows, band, cstat, hist, cdf, lut, work, slots,
                 ivals, rc, out, ideal):
    """Code band-line (t, i) into out and learn from it.

    Returns the words the stream would have if sealed now, or -1 - column for a sample
    outside its range (nothing is coded then). out needs room for that count + 2 C words.
    With ``ideal.size`` > 0, ideal[0] accumulates the line's information content in bits.
    """
    ncol = res.size
    for c in range(ncol):
        p = np.int64(pred[c])
        e = np.int64(res[c])
        if p < 0 or p > max_value or e < -p or e > max_value - p:
            return -1 - c
    r4 = _r4(band, i)
    pstat = cstat[_NCTX:]
    _prepare(t, i, rows, work)
    n = 0
    bits = 0.0
    l1 = 0
    l2 = 0
    ls = 0
    for c in range(ncol):
        b = work[_W_B, c]
        z = work[_W_PAT0, c] * 3 + ls + 1
        k = _context(c, work[_W_A, c], b, l1, l2 if c > 1 else l1, r4)
        h = _distribution(cstat[k, 0], cstat[k, 1], pstat[z, 0], pstat[z, 1])
        flip = -1 if pstat[z, 1] > pstat[z, 0] else 1
        work[_W_PAT, c] = z
        work[_W_HIST, c] = h
        e = np.int64(res[c])
        ef = e * flip
        tok, nx, lo = _token(abs(ef))
        s = _ZERO + tok if ef >= 0 else _ZERO - tok
        ivals[0, n] = cdf[h, s]
        ivals[1, n] = cdf[h, s + 1] - cdf[h, s]
        if ideal.size:
            bits += _PRECISION - math.log2(ivals[1, n])
        n += 1
        if nx > 0:
            p = np.int64(pred[c])
            lim = max_value - p if e > 0 else p
            hi = min(lo + (np.int64(1) << nx) - 1, lim)
            if hi > lo:
                size = hi - lo + 1
                v = abs(ef) - lo
                per = _TOTAL // size
                ivals[0, n] = v * per
                ivals[1, n] = per if v < size - 1 else _TOTAL - v * per
                n += 1
                if ideal.size:
                    bits += math.log2(size)
        work[_W_CTX, c] = k
        work[_W_SYM, c] = s
        l2 = l1
        l1 = abs(e)
        ls = np.sign(e)
    if ideal.size:
        ideal[0] += bits
    encode_intervals(rc, out, ivals, n)
    _finish_line(i, res, rows, band, cstat, hist, cdf, lut, work, slots)
    return num_words(rc)


@_jit
def _decode_line(t, i, pred, max_value, res, rows, band, cstat, hist, cdf, lut, work, slots,
                 rc, words):
    """Decode band-line (t, i) into res and learn from it; returns a status code.

    A prediction outside [0, max_value] is reported before anything is decoded.
    """
    ncol = res.size
    for c in range(ncol):
        p = np.int64(pred[c])
        if p < 0 or p > max_value:
            return _BAD_PREDICTION
    r4 = _r4(band, i)
    pstat = cstat[_NCTX:]
    _prepare(t, i, rows, work)
    lower = rc[D_LOWER]
    rng = rc[D_RANGE]
    point = rc[D_POINT]
    pos = np.int64(rc[D_POS])
    l1 = 0
    l2 = 0
    ls = 0
    for c in range(ncol):
        b = work[_W_B, c]
        z = work[_W_PAT0, c] * 3 + ls + 1
        k = _context(c, work[_W_A, c], b, l1, l2 if c > 1 else l1, r4)
        h = _distribution(cstat[k, 0], cstat[k, 1], pstat[z, 0], pstat[z, 1])
        flip = -1 if pstat[z, 1] > pstat[z, 0] else 1
        work[_W_PAT, c] = z
        work[_W_HIST, c] = h
        scale = rng >> RC_PRECISION
        q = np.int64((point - lower) // scale)
        if q >= _TOTAL:
            return _INVALID
        s = np.int64(lut[h, q >> _LUT_SHIFT])
        while cdf[h, s + 1] <= q:
            s += 1
        lower, rng, point, pos = take(lower, rng, point, pos, words, scale, cdf[h, s],
                                      cdf[h, s + 1] - cdf[h, s])
        st = s - _ZERO
        tok = abs(st)
        m = tok
        if tok > 0:
            p = np.int64(pred[c])
            lim = max_value - p if flip * st > 0 else p
            if tok >= 16:
                nx = (tok - 16) // 4 + 2
                m = (4 | ((tok - 16) & 3)) << nx
                hi = min(m + (np.int64(1) << nx) - 1, lim)
                if hi > m:
                    size = hi - m + 1
                    per = _TOTAL // size
                    scale = rng >> RC_PRECISION
                    q = np.int64((point - lower) // scale)
                    if q >= _TOTAL:
                        return _INVALID
                    v = min(q // per, size - 1)
                    cum = v * per
                    lower, rng, point, pos = take(lower, rng, point, pos, words, scale, cum,
                                                  per if v < size - 1 else _TOTAL - cum)
                    m += v
            if m > lim:
                return _CORRUPT
        e = m * flip
        e = e if st >= 0 else -e
        res[c] = e
        work[_W_CTX, c] = k
        work[_W_SYM, c] = s
        l2 = l1
        l1 = abs(e)
        ls = np.sign(e)
    rc[D_LOWER] = lower
    rc[D_RANGE] = rng
    rc[D_POINT] = point
    rc[D_POS] = np.uint64(pos)
    _finish_line(i, res, rows, band, cstat, hist, cdf, lut, work, slots)
    return _OK



# --------------------------------------------------------------------------- coder memory
#
# All state of an encoder or decoder lives in one int64 array, so that coding a band-line
# is one cheap kernel call: a header, then the arrays of the model kernels (see _views).

_M_LINE, _M_BANDS, _M_ROWS, _M_COLS, _M_MAX, _M_LUTS, _M_TRACK = range(7)
_M_RC = 8  # E_SLOTS (5) words: range coder state (uint64)
_M_IDEAL = 13  # float64: ideal code length in bits (when tracked)
_M_HEAD = 16


@_jit
def _layout(nb, nc, nlut):
    """Offsets of rows, band, cstat, hist, cdf, lut, work, slots, ivals and the end."""
    rows = _M_HEAD
    band = rows + 2 * nb * nc
    cstat = band + 2 * nb
    hist = cstat + 2 * (_NCTX + _NPAT)
    cdf = hist + _NHIST * (_NSYM + 2)
    lut = cdf + _NHIST * (_NSYM + 1)
    work = lut + nlut * (_LUT_SIZE // 8)
    slots = work + 7 * nc
    ivals = slots + _NHIST
    return rows, band, cstat, hist, cdf, lut, work, slots, ivals, ivals + 4 * nc


@_inline
def _views(mem):
    """The arrays in a coder's memory: the model kernels' arguments, rc and ideal."""
    nb = mem[_M_BANDS]
    nc = mem[_M_COLS]
    nlut = mem[_M_LUTS]
    o = _layout(nb, nc, nlut)
    return (
        mem[o[0]:o[1]].reshape((2, nb, nc)),  # rows
        mem[o[1]:o[2]].reshape((nb, 2)),  # band
        mem[o[2]:o[3]].reshape((_NCTX + _NPAT, 2)),  # cstat
        mem[o[3]:o[4]].reshape((_NHIST, _NSYM + 2)),  # hist
        mem[o[4]:o[5]].reshape((_NHIST, _NSYM + 1)),  # cdf
        mem[o[5]:o[6]].view(np.uint8).reshape((nlut, _LUT_SIZE)),  # lut
        mem[o[6]:o[7]].reshape((7, nc)),  # work
        mem[o[7]:o[8]],  # slots
        mem[o[8]:o[9]].reshape((2, 2 * nc)),  # ivals
        mem[_M_RC:_M_RC + E_SLOTS].view(np.uint64),  # rc
        mem[_M_IDEAL:_M_IDEAL + mem[_M_TRACK]].view(np.float64),  # ideal (size 0 or 1)
    )


@_jit
def _encode_next(res, pred, mem, out):
    """``_encode_line`` for the next band-line of the encoder in mem."""
    rows, band, cstat, hist, cdf, lut, work, slots, ivals, rc, ideal = _views(mem)
    t, i = divmod(mem[_M_LINE], mem[_M_BANDS])
    r = _encode_line(t, i, res, pred, mem[_M_MAX], rows, band, cstat, hist, cdf, lut, work,
                     slots, ivals, rc, out, ideal)
    if r >= 0:
        mem[_M_LINE] += 1
    return r


@_jit
def _decode_next(pred, res, mem, words):
    """``_decode_line`` for the next band-line of the decoder in mem; checks the end."""
    rows, band, cstat, hist, cdf, lut, work, slots, _, rc, _ = _views(mem)
    line = mem[_M_LINE]
    t, i = divmod(line, mem[_M_BANDS])
    status = _decode_line(t, i, pred, mem[_M_MAX], res, rows, band, cstat, hist, cdf, lut,
                          work, slots, rc, words)
    if status == _OK:
        mem[_M_LINE] = line + 1
        if line + 1 == mem[_M_BANDS] * mem[_M_ROWS] and not exhausted(rc, words):
            status = _LEFTOVER
    return status


@_jit
def _encode_cube(res, pred, mem, out):
    """Code all band-lines of a cube in BIL order and seal the stream.

    Returns (words, count), out grown as needed, or (out, -1 - flat index) for the first
    sample outside its range.
    """
    nb, nt, nc = res.shape
    rows, band, cstat, hist, cdf, lut, work, slots, ivals, rc, ideal = _views(mem)
    for t in range(nt):
        for i in range(nb):
            need = np.int64(rc[E_POS] + rc[E_NINV]) + 2 * nc + 2
            if need > out.size:
                grown = np.empty(max(2 * out.size, need), dtype=np.uint32)
                pos = np.int64(rc[E_POS])
                grown[:pos] = out[:pos]
                out = grown
            r = _encode_line(t, i, res[i, t], pred[i, t], mem[_M_MAX], rows, band, cstat, hist,
                             cdf, lut, work, slots, ivals, rc, out, ideal)
            if r < 0:
                return out, -1 - ((i * nt + t) * nc - 1 - r)
    mem[_M_LINE] = nb * nt
    return out, seal(rc, out)


@_jit
def _decode_cube(pred, out, mem, words):
    """Decode all band-lines of a cube into out (BIL order); returns a status code."""
    nb, nt, _ = pred.shape
    rows, band, cstat, hist, cdf, lut, work, slots, _, rc, _ = _views(mem)
    for t in range(nt):
        for i in range(nb):
            status = _decode_line(t, i, pred[i, t], mem[_M_MAX], out[i, t], rows, band, cstat,
                                  hist, cdf, lut, work, slots, rc, words)
            if status != _OK:
                return status
    mem[_M_LINE] = nb * nt
    return _OK if exhausted(rc, words) else _LEFTOVER


# --------------------------------------------------------------------------- coder state


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"expected a (bands, rows, cols) shape, got {tuple(shape)}")
    dims = tuple(int(s) for s in shape)
    if min(dims) < 1:
        raise ValueError(f"every dimension must be >= 1, got shape {dims}")
    return dims  # type: ignore[return-value]


def _check_max_value(max_value: int) -> int:
    if isinstance(max_value, bool) or not isinstance(max_value, int | np.integer):
        raise ValueError(f"max_value must be an integer, got {max_value!r}")
    if not 1 <= int(max_value) <= 0xFFFF:
        raise ValueError(f"max_value must be in [1, 65535], got {max_value}")
    return int(max_value)


_INT64 = np.dtype(np.int64)


def _as_line(name: str, values: np.ndarray, ncol: int) -> np.ndarray:
    """values as a contiguous int64 array of shape (ncol,)."""
    if (
        type(values) is np.ndarray
        and values.dtype is _INT64
        and values.shape == (ncol,)
        and values.flags.c_contiguous
    ):
        return values
    arr = np.asarray(values)
    if arr.shape != (ncol,):
        raise ValueError(f"{name} must have shape ({ncol},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _memory(shape: tuple[int, int, int], max_value: int, decoder: bool = False,
            track_ideal: bool = False) -> np.ndarray:
    """A fresh coder memory (see _views) for a cube of the given shape."""
    nb, nt, nc = shape
    counts, cdf, lut = _initial_tables()
    nlut = _NHIST if decoder else 0
    mem = np.zeros(_layout(nb, nc, nlut)[-1], dtype=np.int64)
    mem[[_M_BANDS, _M_ROWS, _M_COLS, _M_MAX, _M_LUTS, _M_TRACK]] = (
        nb, nt, nc, max_value, nlut, int(track_ideal))
    _, _, m_cstat, m_hist, m_cdf, m_lut, _, _, _, rc, _ = _views(mem)
    m_hist[:, :_NSYM] = counts
    m_hist[:, _H_TOT] = counts.sum(axis=1)
    m_cdf[:] = cdf
    if decoder:
        m_lut[:] = lut
    else:
        encoder_start(rc)
    q = np.arange(_NCTX) // (_NR * _NR * _NR)
    bl = q // 2 + 1
    lead = (2 + (q & 1)) << np.maximum(bl - 2, 0)
    centre = np.where(q < 2, q, lead + (bl >= 3) * (1 << np.maximum(bl - 3, 0)))
    # q(A + B + L) measures 12 * mean |e|; the accumulator holds 16 |e| per sample
    m_cstat[:_NCTX, 0] = (4 * _CTX_INIT_N * centre) // 3
    m_cstat[:, 1] = _CTX_INIT_N
    m_cstat[_NCTX:] = _PAT_INIT
    return mem


def _stream(words: np.ndarray) -> bytes:
    head = bytes([_VERSION]) + int(words.size).to_bytes(4, "little")
    return head + words.astype("<u4", copy=False).tobytes()


def _range_error(p: int, e: int, where: str, max_value: int) -> ValueError:
    if not 0 <= p <= max_value:
        return ValueError(f"prediction {p} at {where} is outside [0, max_value]")
    return ValueError(f"residual {e} at {where} is outside [-p, max_value - p] (p={p})")


# --------------------------------------------------------------------------- public API


class ResidualEncoder:
    """Streaming encoder: call ``encode_line`` for every band-line in BIL order, then ``finish``.

    ``shape`` is (bands, rows, cols); ``max_value`` (1..65535) bounds the samples, so a
    residual with prediction p must lie in [-p, max_value - p].
    """

    def __init__(self, shape: tuple[int, int, int], max_value: int,
                 track_ideal: bool = False) -> None:
        shape = _check_shape(shape)
        self._max_value = _check_max_value(max_value)
        self._ncol = shape[2]
        self._nlines = shape[0] * shape[1]
        self._line = 0
        self._mem = _memory(shape, self._max_value, track_ideal=track_ideal)
        self._track = track_ideal
        self._out = np.empty(64 * self._ncol + 64, dtype=np.uint32)
        self._words = 0  # of the stream if it were sealed now

    @property
    def ideal_bits(self) -> float:
        """With ``track_ideal``: the information content in bits of everything coded so far
        under the model's own probabilities (the length an ideal entropy coder would reach);
        0.0 without."""
        return float(self._mem[_M_IDEAL:_M_IDEAL + 1].view(np.float64)[0]) if self._track \
            else 0.0

    def _reserve(self, need: int) -> None:
        if need > self._out.size:
            grown = np.empty(max(2 * self._out.size, need), dtype=np.uint32)
            pos = int(self._mem[_M_RC + E_POS])
            grown[:pos] = self._out[:pos]
            self._out = grown

    def encode_line(self, residuals: np.ndarray, predictions: np.ndarray) -> None:
        """Encode the C residuals of the next band-line given their predictions."""
        ncol = self._ncol
        res = _as_line("residuals", residuals, ncol)
        pred = _as_line("predictions", predictions, ncol)
        if self._line >= self._nlines:
            raise ValueError(f"all {self._nlines} band-lines of the cube are already coded")
        if self._words + 2 * ncol > self._out.size:
            self._reserve(self._words + 2 * ncol)
        n = _encode_next(res, pred, self._mem, self._out)
        if n < 0:
            c = -1 - n
            raise _range_error(int(pred[c]), int(res[c]), f"column {c}", self._max_value)
        self._line += 1
        self._words = n

    def num_bits(self) -> int:
        """Size of the stream so far in bits without its 5-byte header: 32 per word, the
        closing words included (as constriction's ``RangeEncoder.num_bits``)."""
        return 32 * self._words

    def finish(self) -> bytes:
        """Return the coded stream; every band-line must have been encoded."""
        if self._line != self._nlines:
            raise ValueError(f"only {self._line} of {self._nlines} band-lines were encoded")
        rc = self._mem[_M_RC:_M_RC + E_SLOTS].view(np.uint64)
        self._reserve(int(rc[E_POS] + rc[E_NINV]) + 2)
        return _stream(self._out[: seal(rc, self._out)])


class ResidualDecoder:
    """Streaming decoder of a ``ResidualEncoder`` stream, one band-line per ``decode_line``.

    ``shape`` and ``max_value`` must be those given to the encoder. Raises ValueError on
    truncated or corrupt data (detected at the latest with the last band-line).
    """

    def __init__(self, data: bytes, shape: tuple[int, int, int], max_value: int) -> None:
        shape = _check_shape(shape)
        self._ncol = shape[2]
        self._nlines = shape[0] * shape[1]
        self._line = 0
        self._mem = _memory(shape, _check_max_value(max_value), decoder=True)
        buf = bytes(data)
        if len(buf) < _HEADER:
            raise ValueError(f"stream too short: {len(buf)} bytes")
        if buf[0] != _VERSION:
            raise ValueError(f"unsupported stream version {buf[0]}: this decoder reads "
                             f"version {_VERSION} only")
        nwords = int.from_bytes(buf[1:_HEADER], "little")
        if len(buf) != _HEADER + 4 * nwords:
            raise ValueError(
                f"stream truncated or padded: header announces {nwords} words "
                f"({_HEADER + 4 * nwords} bytes), got {len(buf)} bytes"
            )
        self._words = np.frombuffer(buf, dtype="<u4", offset=_HEADER).astype(np.uint32)
        decoder_start(self._words, self._mem[_M_RC:_M_RC + D_SLOTS].view(np.uint64))
        self._failed = False

    def decode_line(self, predictions: np.ndarray) -> np.ndarray:
        """Decode the next band-line from its C predictions; returns the residuals (int64).

        A prediction outside [0, max_value] raises ValueError and decodes nothing; after a
        ValueError for corrupt data the decoder cannot go on.
        """
        pred = _as_line("predictions", predictions, self._ncol)
        if self._line >= self._nlines:
            raise ValueError(f"all {self._nlines} band-lines of the cube are already coded")
        if self._failed:
            raise ValueError("the decoder failed on an earlier band-line")
        res = np.empty(self._ncol, dtype=np.int64)
        status = _decode_next(pred, res, self._mem, self._words)
        if status != _OK:
            self._failed = status != _BAD_PREDICTION
            if status == _LEFTOVER:
                self._line += 1
            raise ValueError(_DECODE_ERRORS[status])
        self._line += 1
        return res


def _check_cube(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a (bands, rows, cols) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def encode_cube(residuals: np.ndarray, predictions: np.ndarray, max_value: int) -> bytes:
    """Encode residuals (bands, rows, cols) with their predictions, in BIL order."""
    res = _check_cube("residuals", residuals)
    pred = _check_cube("predictions", predictions)
    if res.shape != pred.shape:
        raise ValueError(f"shape mismatch: residuals {res.shape}, predictions {pred.shape}")
    shape = _check_shape(res.shape)
    max_value = _check_max_value(max_value)
    out = np.empty(res.size // 8 + 2 * shape[2] + 64, dtype=np.uint32)
    out, n = _encode_cube(res, pred, _memory(shape, max_value), out)
    if n < 0:
        i, t, c = np.unravel_index(-1 - n, shape)
        raise _range_error(int(pred[i, t, c]), int(res[i, t, c]),
                           f"band {i}, row {t}, column {c}", max_value)
    return _stream(out[:n])


def decode_cube(data: bytes, predictions: np.ndarray, max_value: int) -> np.ndarray:
    """Decode ``encode_cube`` output; returns int32 residuals shaped like ``predictions``."""
    pred = _check_cube("predictions", predictions)
    dec = ResidualDecoder(data, pred.shape, max_value)
    out = np.empty(pred.shape, dtype=np.int32)
    status = _decode_cube(pred, out, dec._mem, dec._words)
    if status != _OK:
        raise ValueError(_DECODE_ERRORS[status])
    return out
