"""Model kernels: contexts, distributions and the coding of a band-line.

Model state, shared by encoder and decoder (int64 unless noted):
  rows (2, I, C): |e| and e of the last coded row of every band
  band (I, 2): running sum of |e| and sample count per band
  cstat (_NCTX + _NPAT, 2): context accumulator (16 |e| per sample) and counter, then
      the positive and negative counts (2 per sample) of every sign pattern
  hist (_NHIST, _NSYM + 2): token counts, then their total and samples since the rebuild
  cdf (_NHIST, _NSYM + 1): cumulative frequencies each distribution codes with
  lut (_NHIST, 256) uint8: decoder lookup tables of the cdfs (no rows in an encoder)
Per-line scratch:
  work (7, C): A, B and the partial sign pattern of every column (from the previous band
      and row), then per coded sample its distribution, context, sign pattern and symbol
  slots (_NHIST,): marks of the distributions a line used, all zero between lines
  ivals (2, 2 C): the encoder's intervals (cumulative frequency, frequency) of a line
"""

from __future__ import annotations

import math

import numpy as np
from numba.cpython.unsafe.numbers import leading_zeros

from hsicomp.entropy.adaptive.constants import (
    _BAD_PREDICTION,
    _BAND_LIMIT,
    _CORRUPT,
    _CTX_LIMIT,
    _HIST_LIMIT,
    _INC,
    _INVALID,
    _LUT_SHIFT,
    _NCTX,
    _NR,
    _NSCALE,
    _NSIGN,
    _NSYM,
    _OK,
    _PAT_LIMIT,
    _PRECISION,
    _REBUILD_FRACTION,
    _REBUILD_MIN,
    _TOTAL,
    _ZERO,
    _inline,
    _jit,
)
from hsicomp.entropy.adaptive.tables import _build_cdf, _build_lut
from hsicomp.entropy.rangecoder import (
    D_LOWER,
    D_POINT,
    D_POS,
    D_RANGE,
    RC_PRECISION,
    encode_intervals,
    num_words,
    take,
)

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

