"""Context-adaptive range coder for signed prediction residuals (``arith``).

Codes residuals ``e = x - p`` of a cube with shape (bands I, rows T, cols C) one band-line
(all C columns of band i on row t) at a time, in BIL order (row, band, column). Every model
parameter is computed with integer arithmetic from residuals both sides already know, so
encoder and decoder agree bit for bit on any machine. Entropy coding uses constriction's
range coder (32-bit words, 24-bit probabilities).

Symbols
    A residual is flipped (``e' = s * e``, ``s = +-1``, see below) and split into a signed
    token and an optional mantissa. Magnitudes ``m = |e'| < 16`` are their own token; larger
    magnitudes with bit length ``b`` get token ``16 + 4 (b - 5) + f``, where ``f`` are the
    two bits below the leading one, followed by the ``b - 3`` low bits as a mantissa. The
    token alphabet is ``-63..63`` (127 symbols), enough for any ``|e| < 2**16``, so no
    escape symbol is needed. The mantissa is coded with a uniform model over the values of
    the token's bucket that lie inside the residual's real range ``[-p, max_value - p]``
    (nothing is coded when only one value is left).

Context model (per sample of band-line (t, i), column c)
    * ``A = 2|e[i-1,t,c]| + |e[i-1,t,c-1]| + |e[i-1,t,c+1]|`` (previous band, same row) and
      ``B``, the same over band i on row t - 1 (edge columns are repeated); when one of the
      two is missing (band 0 or row 0) it takes the other's value.
    * ``R = 4 * mean |e|`` of band i over the previous rows, a running mean kept as an
      integer accumulator and counter that are halved every ``_BAND_LIMIT`` samples.
    * The context is ``(q(A + B), r(A, B), r(2R, A + B))``: ``q`` is a log2 quantiser with
      two steps per octave (38 levels) and ``r`` a five-level ratio quantiser, which gives
      950 contexts. Each context learns the mean ``|e|`` of its samples with an integer
      accumulator and counter (halved every 64 samples, CCSDS-123 style); that mean,
      quantised on a log2 scale with two steps per octave (48 scales from 1/256 up), picks
      the distribution that codes the token.
    * Sign: the signed sum ``Bs`` built like ``B`` (or like ``A`` on row 0) sets the flip
      ``s = -1`` when ``Bs < 0`` (so a skew shared with the neighbours is learnt once), and
      a three-level confidence (``Bs == 0``, ``2|Bs| < B``, else) splits every scale in
      three, for 144 token distributions.
    * Each distribution is an adaptive histogram (integer counts, +32 per sample, halved
      when the total passes 2**21), started from a two-sided geometric prior with the
      scale's mean worth 128 samples. The prior is computed with Python integers
      (fixed-point square root and powers). Counts become frequencies ``f >= 1`` summing
      to exactly 2**24 by integer division; constriction gets ``f - 1`` as floats, which
      it maps back to exactly ``f`` (its normaliser is then exactly 1). A distribution is
      rebuilt after a band-line once its new samples (at least 8) carry 1/32 of its weight.

Within a band-line all statistics are those from before the line. The C tokens are coded
grouped by distribution (ascending index, then column), one vectorised call per group,
followed by all mantissas in column order in a single call; the state is then updated with
the line. The stream is a version byte, the number of 32-bit words (uint32, little
endian) and the words (little endian).

The model has to learn its statistics: on tiny inputs of i.i.d. noise (about 10**4
samples) that costs a few hundredths of a bit per sample, enough to trail the one-parameter
Golomb coder there; on larger or spatially/spectrally structured inputs it is ahead.
"""

from __future__ import annotations

import math
from functools import lru_cache

import constriction
import numpy as np
from numba import njit

__all__ = [
    "ResidualDecoder",
    "ResidualEncoder",
    "decode_cube",
    "encode_cube",
]

_VERSION = 1
_HEADER = 5  # version byte + uint32 word count

_NTOK = 64  # magnitude tokens 0..63
_NSYM = 2 * _NTOK - 1  # signed tokens -63..63, stored as 0..126
_ZERO = _NTOK - 1  # symbol of e' == 0
_PRECISION = 24
_TOTAL = 1 << _PRECISION

_NQ = 38  # levels of q(A + B); A + B <= 8 * 65535 < 2**19
_NR = 5  # levels of a ratio quantiser
_NCTX = _NQ * _NR * _NR
_CTX_INIT_N = 4  # initial counter of a context's mean
_CTX_LIMIT = 64  # a context's accumulator and counter are halved at this count
_NSCALE = 48  # scales: log2 steps of mean |e| in 1/256 units, two per octave
_NSIGN = 3  # sign-confidence levels
_NHIST = _NSCALE * _NSIGN
_INC = 32  # histogram increment per sample
_PRIOR_WEIGHT = 4096  # histogram weight of the prior (128 samples)
_HIST_LIMIT = 1 << 21  # histogram counts are halved above this total
_REBUILD_MIN = 8  # least new samples before a distribution is rebuilt
_REBUILD_FRACTION = 32  # rebuilt once the new samples reach 1/32 of the total weight
_BAND_LIMIT = 1 << 14  # band running mean: halved at this many samples

_UNIFORM = constriction.stream.model.Uniform()


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


@njit(cache=True)
def _weights(counts, out):
    """Constriction weights ``f - 1`` of integer frequencies ``f >= 1`` summing to 2**24."""
    n = counts.size
    tot = np.int64(0)
    best = 0
    for k in range(n):
        tot += counts[k]
        if counts[k] > counts[best]:
            best = k
    free = np.int64(_TOTAL - n)
    used = np.int64(0)
    for k in range(n):
        w = (counts[k] * free) // tot
        out[k] = w
        used += w
    out[best] += free - used


@lru_cache(maxsize=1)
def _initial_models() -> tuple[np.ndarray, np.ndarray, tuple]:
    """Prior histogram counts, their weights and constriction models (shared, immutable)."""
    counts = _prior_counts()
    weights = np.empty((_NHIST, _NSYM), dtype=np.float64)
    for h in range(_NHIST):
        _weights(counts[h], weights[h])
    models = tuple(
        constriction.stream.model.Categorical(weights[h], perfect=False) for h in range(_NHIST)
    )
    weights.flags.writeable = False
    return counts, weights, models


# --------------------------------------------------------------------------- kernels
#
# State arrays (int64 unless noted), shared by encoder and decoder:
#   rows (2, I, C): |e| and e of the last coded row of every band
#   band (I, 2): running sum of |e| and sample count per band
#   cstat (_NCTX, 2): context accumulator (16 |e| per sample) and counter
#   hist (_NHIST, _NSYM + 2): token counts, then their total and samples since the rebuild
#   weights (_NHIST, _NSYM) float64: constriction weights of rebuilt distributions
# Per-line scratch:
#   work (6, C): distribution, flip, context, group order, bucket low end, mantissa flag
#   small (2, _NHIST): counting-sort scratch and the list of distributions to rebuild
#   groups (3, C + 1): distribution, size and start of every group (see _group)
#   sym (4, C) int32: tokens by column, tokens by group, mantissa values and sizes

_W_HIST, _W_FLIP, _W_CTX, _W_ORDER, _W_LOW, _W_MANT = range(6)
_S_COL, _S_GRP, _S_MVAL, _S_MSIZE = range(4)
_H_TOT, _H_PEND = _NSYM, _NSYM + 1


@njit(cache=True, inline="always")
def _bit_length(v):
    """Bit length of 0 <= v < 2**32."""
    n = 0
    if v >= 65536:
        v >>= 16
        n += 16
    if v >= 256:
        v >>= 8
        n += 8
    if v >= 16:
        v >>= 4
        n += 4
    if v >= 4:
        v >>= 2
        n += 2
    if v >= 2:
        v >>= 1
        n += 1
    return n + v


@njit(cache=True, inline="always")
def _log_level(v):
    """Log2 quantiser with two steps per octave: 0, 1, 2, 3, 4-5, 6-7, 8-11, ..."""
    if v < 2:
        return v
    bl = _bit_length(v)
    return 2 * bl - 2 + ((v >> (bl - 2)) & 1)


@njit(cache=True, inline="always")
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


@njit(cache=True)
def _contexts(t, i, rows, band, cstat, work):
    """Distribution, flip and context of every column of band-line (t, i)."""
    ncol = rows.shape[2]
    mag = rows[0]
    sgn = rows[1]
    r4 = (4 * band[i, 0]) // band[i, 1] if band[i, 1] > 0 else 0
    for c in range(ncol):
        cl = c - 1 if c > 0 else 0
        cr = c + 1 if c < ncol - 1 else ncol - 1
        a = 0
        a_s = 0
        if i > 0:
            a = 2 * mag[i - 1, c] + mag[i - 1, cl] + mag[i - 1, cr]
            a_s = 2 * sgn[i - 1, c] + sgn[i - 1, cl] + sgn[i - 1, cr]
        if t > 0:
            b = 2 * mag[i, c] + mag[i, cl] + mag[i, cr]
            b_s = 2 * sgn[i, c] + sgn[i, cl] + sgn[i, cr]
            if i == 0:
                a = b
        else:
            b = a
            b_s = a_s
        total = a + b
        k = (_log_level(total) * _NR + _ratio(a, b)) * _NR + _ratio(2 * r4, total)
        # scale: the context's mean |e| in 1/256 units, two steps per octave
        s = _log_level((cstat[k, 0] * 16) // cstat[k, 1])
        if s >= _NSCALE:
            s = _NSCALE - 1
        if b_s == 0:
            sc = 0
        elif 2 * abs(b_s) < b:
            sc = 1
        else:
            sc = 2
        work[_W_HIST, c] = s * _NSIGN + sc
        work[_W_FLIP, c] = -1 if b_s < 0 else 1
        work[_W_CTX, c] = k


@njit(cache=True)
def _group(work, small, groups):
    """Order columns by distribution, then column; return the number of groups.

    Group g uses distribution groups[0, g] for groups[1, g] columns, listed in
    work[_W_ORDER] from position groups[2, g]; groups[2, ng] is the number of columns.
    """
    ncol = work.shape[1]
    counts = small[0]
    order = work[_W_ORDER]
    ng = 0
    for c in range(ncol):
        h = work[_W_HIST, c]
        if counts[h] == 0:
            groups[0, ng] = h
            ng += 1
        counts[h] += 1
    # insertion sort of the (few) distinct distributions
    for g in range(1, ng):
        h = groups[0, g]
        j = g - 1
        while j >= 0 and groups[0, j] > h:
            groups[0, j + 1] = groups[0, j]
            j -= 1
        groups[0, j + 1] = h
    start = 0
    for g in range(ng):
        h = groups[0, g]
        n = counts[h]
        groups[1, g] = n
        groups[2, g] = start
        counts[h] = start  # becomes the fill position
        start += n
    groups[2, ng] = ncol
    for c in range(ncol):
        h = work[_W_HIST, c]
        order[counts[h]] = c
        counts[h] += 1
    for g in range(ng):
        counts[groups[0, g]] = 0
    return ng


@njit(cache=True)
def _prepare(t, i, rows, band, cstat, work, small, groups):
    """Contexts and coding groups of band-line (t, i); returns the number of groups."""
    _contexts(t, i, rows, band, cstat, work)
    return _group(work, small, groups)


@njit(cache=True)
def _update(i, res, rows, band, cstat, hist, weights, work, small, groups, ng, sym):
    """Learn from a coded band-line; return how many distributions need rebuilding."""
    ncol = res.size
    line_sum = 0
    for c in range(ncol):
        e = np.int64(res[c])
        m = abs(e)
        line_sum += m
        k = work[_W_CTX, c]
        cstat[k, 0] += 16 * m
        cstat[k, 1] += 1
        if cstat[k, 1] >= _CTX_LIMIT:
            cstat[k, 0] = (cstat[k, 0] + 1) >> 1
            cstat[k, 1] = (cstat[k, 1] + 1) >> 1
        h = work[_W_HIST, c]
        hist[h, sym[_S_COL, c]] += _INC
        hist[h, _H_TOT] += _INC
        hist[h, _H_PEND] += 1
        if hist[h, _H_TOT] > _HIST_LIMIT:
            tot = 0
            for j in range(_NSYM):
                hist[h, j] = (hist[h, j] + 1) >> 1
                tot += hist[h, j]
            hist[h, _H_TOT] = tot
        rows[0, i, c] = m
        rows[1, i, c] = e
    band[i, 0] += line_sum
    band[i, 1] += ncol
    if band[i, 1] >= _BAND_LIMIT:
        band[i, 0] = (band[i, 0] + 1) >> 1
        band[i, 1] = (band[i, 1] + 1) >> 1
    nr = 0
    for g in range(ng):
        h = groups[0, g]
        pend = hist[h, _H_PEND]
        if pend >= _REBUILD_MIN and pend * _INC * _REBUILD_FRACTION >= hist[h, _H_TOT]:
            hist[h, _H_PEND] = 0
            _weights(hist[h, :_NSYM], weights[h])
            small[1, nr] = h
            nr += 1
    return nr


@njit(cache=True, inline="always")
def _token(m):
    """(token, mantissa width in bits, bucket low end) of a magnitude < 2**16."""
    if m < 16:
        return m, 0, m
    b = _bit_length(m)
    f = (m >> (b - 3)) & 3
    return 16 + 4 * (b - 5) + f, b - 3, (4 | f) << (b - 3)


@njit(cache=True)
def _encode_line(t, i, res, pred, max_value, rows, band, cstat, hist, weights, work, small,
                 groups, sym):
    """Tokens and mantissas of band-line (t, i), then the state update.

    Returns (groups, mantissas, rebuilds), or (-1 - column, 0, 0) for a residual outside
    its range.
    """
    ncol = res.size
    for c in range(ncol):
        p = np.int64(pred[c])
        e = np.int64(res[c])
        if p < 0 or p > max_value or e < -p or e > max_value - p:
            return -1 - c, 0, 0
    ng = _prepare(t, i, rows, band, cstat, work, small, groups)
    nm = 0
    for c in range(ncol):
        e = np.int64(res[c])
        ef = e * work[_W_FLIP, c]
        tok, nx, lo = _token(abs(ef))
        sym[_S_COL, c] = _ZERO + tok if ef >= 0 else _ZERO - tok
        if nx > 0:
            p = np.int64(pred[c])
            lim = max_value - p if e > 0 else p
            hi = min(lo + (np.int64(1) << nx) - 1, lim)
            if hi > lo:
                sym[_S_MVAL, nm] = abs(ef) - lo
                sym[_S_MSIZE, nm] = hi - lo + 1
                nm += 1
    for j in range(ncol):
        sym[_S_GRP, j] = sym[_S_COL, work[_W_ORDER, j]]
    nr = _update(i, res, rows, band, cstat, hist, weights, work, small, groups, ng, sym)
    return ng, nm, nr


@njit(cache=True)
def _decode_finish(i, next_t, next_i, offsets, res, rows, band, cstat, hist, weights, work,
                   small, groups, ng, sym):
    """Residuals from tokens and mantissas, state update and the next line's groups.

    Returns (rebuilds, groups of the next line); next_t < 0 when there is no next line.
    """
    ncol = res.size
    nm = 0
    for c in range(ncol):
        m = work[_W_LOW, c]
        if work[_W_MANT, c]:
            m += offsets[nm]
            nm += 1
        e = m * work[_W_FLIP, c]
        res[c] = e if sym[_S_COL, c] >= _ZERO else -e
    nr = _update(i, res, rows, band, cstat, hist, weights, work, small, groups, ng, sym)
    ng_next = 0
    if next_t >= 0:
        ng_next = _prepare(next_t, next_i, rows, band, cstat, work, small, groups)
    return nr, ng_next


@njit(cache=True)
def _decode_tokens(gsyms, pred, max_value, i, next_t, next_i, res, rows, band, cstat, hist,
                   weights, work, small, groups, ng, sym):
    """Place decoded tokens, list mantissa sizes and, when there are none, finish the line.

    Returns (mantissas, rebuilds, groups of the next line); mantissas is -1 for a token
    outside the residual's range and -2 for a prediction outside [0, max_value].
    """
    ncol = gsyms.size
    for j in range(ncol):
        sym[_S_COL, work[_W_ORDER, j]] = gsyms[j]
    nm = 0
    for c in range(ncol):
        p = np.int64(pred[c])
        if p < 0 or p > max_value:
            return -2, 0, 0
        st = np.int64(sym[_S_COL, c]) - _ZERO
        tok = abs(st)
        work[_W_MANT, c] = 0
        if tok < 16:
            lo = tok
            hi = tok
        else:
            nx = (tok - 16) // 4 + 2
            lo = (4 | ((tok - 16) & 3)) << nx
            hi = lo + (np.int64(1) << nx) - 1
        work[_W_LOW, c] = lo
        if st == 0:
            continue
        lim = max_value - p if work[_W_FLIP, c] * st > 0 else p
        if lo > lim:
            return -1, 0, 0
        hi = min(hi, lim)
        if hi > lo:
            work[_W_MANT, c] = 1
            sym[_S_MSIZE, nm] = hi - lo + 1
            nm += 1
    if nm:
        return nm, 0, 0
    nr, ng_next = _decode_finish(i, next_t, next_i, sym[_S_MVAL, :0], res, rows, band, cstat,
                                 hist, weights, work, small, groups, ng, sym)
    return 0, nr, ng_next


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


def _as_line(name: str, values: np.ndarray, ncol: int) -> np.ndarray:
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.shape != (ncol,):
        raise ValueError(f"{name} must have shape ({ncol},), got {arr.shape}")
    if arr.dtype != np.int64:
        if arr.dtype.kind not in "iu":
            raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
        return arr.astype(np.int64)
    return arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)


class _State:
    """Adaptive statistics shared by encoder and decoder, plus per-line scratch arrays."""

    def __init__(self, shape: tuple[int, int, int], max_value: int) -> None:
        self.shape = _check_shape(shape)
        self.max_value = _check_max_value(max_value)
        nb, nr, nc = self.shape
        self.nlines = nb * nr
        counts, weights, models = _initial_models()
        self.models = list(models)
        self.hist = np.zeros((_NHIST, _NSYM + 2), dtype=np.int64)
        self.hist[:, :_NSYM] = counts
        self.hist[:, _H_TOT] = counts.sum(axis=1)
        self.weights = weights.copy()  # f - 1 of the distribution each model codes with
        self.cstat = np.empty((_NCTX, 2), dtype=np.int64)
        q = np.arange(_NCTX) // (_NR * _NR)
        bl = q // 2 + 1
        lead = (2 + (q & 1)) << np.maximum(bl - 2, 0)
        centre = np.where(q < 2, q, lead + (bl >= 3) * (1 << np.maximum(bl - 3, 0)))
        # q(A + B) measures 8 * mean |e|; the accumulator holds 16 |e| per sample
        self.cstat[:, 0] = 2 * _CTX_INIT_N * centre
        self.cstat[:, 1] = _CTX_INIT_N
        self.rows = np.zeros((2, nb, nc), dtype=np.int64)
        self.band = np.zeros((nb, 2), dtype=np.int64)
        self.work = np.zeros((6, nc), dtype=np.int64)
        self.small = np.zeros((2, _NHIST), dtype=np.int64)
        self.groups = np.zeros((3, nc + 1), dtype=np.int64)
        self.sym = np.zeros((4, nc), dtype=np.int32)
        self.line = 0

    def position(self) -> tuple[int, int]:
        """(row, band) of the next band-line; ValueError when the cube is complete."""
        if self.line >= self.nlines:
            raise ValueError(f"all {self.nlines} band-lines of the cube are already coded")
        t, i = divmod(self.line, self.shape[0])
        return t, i

    def rebuild_models(self, nr: int) -> None:
        categorical = constriction.stream.model.Categorical
        for h in self.small[1, :nr].tolist():
            self.models[h] = categorical(self.weights[h], perfect=False)


# --------------------------------------------------------------------------- public API


class ResidualEncoder:
    """Streaming encoder: call ``encode_line`` for every band-line in BIL order, then ``finish``.

    ``shape`` is (bands, rows, cols); ``max_value`` (1..65535) bounds the samples, so a
    residual with prediction p must lie in [-p, max_value - p].
    """

    def __init__(self, shape: tuple[int, int, int], max_value: int,
                 track_ideal: bool = False) -> None:
        self._st = _State(shape, max_value)
        self._enc = constriction.stream.queue.RangeEncoder()
        self._track = track_ideal
        self._used = self._st.weights.copy() if track_ideal else None  # weights of the models
        #: With ``track_ideal``: the information content in bits of everything coded so far
        #: under the model's own probabilities (the length an ideal entropy coder would reach).
        self.ideal_bits = 0.0

    def encode_line(self, residuals: np.ndarray, predictions: np.ndarray) -> None:
        """Encode the C residuals of the next band-line given their predictions."""
        st = self._st
        ncol = st.shape[2]
        res = _as_line("residuals", residuals, ncol)
        pred = _as_line("predictions", predictions, ncol)
        t, i = st.position()
        ng, nm, nr = _encode_line(
            t, i, res, pred, st.max_value, st.rows, st.band, st.cstat, st.hist, st.weights,
            st.work, st.small, st.groups, st.sym,
        )
        if ng < 0:
            c = -1 - ng
            p, e = int(pred[c]), int(res[c])
            if not 0 <= p <= st.max_value:
                raise ValueError(f"prediction {p} at column {c} is outside [0, max_value]")
            raise ValueError(f"residual {e} at column {c} is outside [-p, max_value - p] (p={p})")
        st.line += 1
        enc, models, gsyms = self._enc, st.models, st.sym[_S_GRP]
        hs, starts = st.groups[::2, : ng + 1].tolist()
        for g in range(ng):
            enc.encode(gsyms[starts[g] : starts[g + 1]], models[hs[g]])
        if nm:
            enc.encode(st.sym[_S_MVAL, :nm], _UNIFORM, st.sym[_S_MSIZE, :nm])
        if self._track:
            self._add_ideal(ng, hs, starts, nm)
        if nr:
            st.rebuild_models(nr)
            if self._track:
                rebuilt = st.small[1, :nr]
                self._used[rebuilt] = st.weights[rebuilt]

    def _add_ideal(self, ng: int, hs: list[int], starts: list[int], nm: int) -> None:
        st = self._st
        gsyms = st.sym[_S_GRP]
        bits = 0.0
        for g in range(ng):
            freq = self._used[hs[g]][gsyms[starts[g] : starts[g + 1]]] + 1.0
            bits += float(np.sum(_PRECISION - np.log2(freq)))
        if nm:
            bits += float(np.sum(np.log2(st.sym[_S_MSIZE, :nm].astype(np.float64))))
        self.ideal_bits += bits

    def finish(self) -> bytes:
        """Return the coded stream; every band-line must have been encoded."""
        st = self._st
        if st.line != st.nlines:
            raise ValueError(f"only {st.line} of {st.nlines} band-lines were encoded")
        words = np.asarray(self._enc.get_compressed(), dtype="<u4")
        head = bytes([_VERSION]) + int(words.size).to_bytes(4, "little")
        return head + words.tobytes()


class ResidualDecoder:
    """Streaming decoder of a ``ResidualEncoder`` stream, one band-line per ``decode_line``.

    ``shape`` and ``max_value`` must be those given to the encoder. Raises ValueError on
    truncated or corrupt data (detected at the latest with the last band-line).
    """

    def __init__(self, data: bytes, shape: tuple[int, int, int], max_value: int) -> None:
        st = self._st = _State(shape, max_value)
        buf = bytes(data)
        if len(buf) < _HEADER:
            raise ValueError(f"stream too short: {len(buf)} bytes")
        if buf[0] != _VERSION:
            raise ValueError(f"unknown stream version {buf[0]}")
        nwords = int.from_bytes(buf[1:_HEADER], "little")
        if len(buf) != _HEADER + 4 * nwords:
            raise ValueError(
                f"stream truncated or padded: header announces {nwords} words "
                f"({_HEADER + 4 * nwords} bytes), got {len(buf)} bytes"
            )
        words = np.frombuffer(buf, dtype="<u4", offset=_HEADER).astype(np.uint32)
        try:
            self._dec = constriction.stream.queue.RangeDecoder(words)
        except Exception as exc:
            raise ValueError(f"corrupt stream: {exc}") from exc
        # the groups of the next band-line are always prepared in advance
        self._ng = _prepare(0, 0, st.rows, st.band, st.cstat, st.work, st.small, st.groups)

    def decode_line(self, predictions: np.ndarray) -> np.ndarray:
        """Decode the next band-line from its C predictions; returns the residuals (int64).

        After a ValueError (corrupt data, or a prediction outside [0, max_value]) the
        decoder cannot go on.
        """
        st = self._st
        ncol = st.shape[2]
        pred = predictions
        if not (
            type(pred) is np.ndarray
            and pred.dtype == np.int64
            and pred.shape == (ncol,)
            and pred.flags.c_contiguous
        ):
            pred = _as_line("predictions", predictions, ncol)
        line = st.line
        if line >= st.nlines:
            raise ValueError(f"all {st.nlines} band-lines of the cube are already coded")
        t, i = divmod(line, st.shape[0])
        next_t, next_i = divmod(line + 1, st.shape[0])
        if line + 1 == st.nlines:
            next_t = -1
        dec, ng = self._dec, self._ng
        hs, ns = st.groups[:2, :ng].tolist()
        res = np.empty(ncol, dtype=np.int64)
        try:
            parts = map(dec.decode, map(st.models.__getitem__, hs), ns)
            gsyms = np.frombuffer(b"".join(parts), dtype=np.int32)
            nm, nr, ng = _decode_tokens(
                gsyms, pred, st.max_value, i, next_t, next_i, res, st.rows, st.band, st.cstat,
                st.hist, st.weights, st.work, st.small, st.groups, ng, st.sym,
            )
            if nm == -2:
                raise ValueError("a prediction is outside [0, max_value]")
            if nm < 0:
                raise ValueError("corrupt stream: decoded residual outside its range")
            if nm:
                offsets = dec.decode(_UNIFORM, st.sym[_S_MSIZE, :nm])
                nr, ng = _decode_finish(
                    i, next_t, next_i, offsets, res, st.rows, st.band, st.cstat, st.hist,
                    st.weights, st.work, st.small, st.groups, self._ng, st.sym,
                )
        except ValueError:
            self._dec = _Failed()
            raise
        except Exception as exc:  # constriction reports bad data with its own errors
            self._dec = _Failed()
            raise ValueError(f"corrupt stream: {exc}") from exc
        st.line = line + 1
        self._ng = ng
        if nr:
            st.rebuild_models(nr)
        if line + 1 == st.nlines and not dec.maybe_exhausted():
            raise ValueError("corrupt stream: data left after the last band-line")
        return res


class _Failed:
    """Stands in for the range decoder once a band-line failed to decode."""

    def decode(self, *args: object) -> None:
        raise ValueError("the decoder failed on an earlier band-line")


def _check_cube(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a (bands, rows, cols) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return arr


def encode_cube(residuals: np.ndarray, predictions: np.ndarray, max_value: int) -> bytes:
    """Encode residuals (bands, rows, cols) with their predictions, in BIL order."""
    res = _check_cube("residuals", residuals)
    pred = _check_cube("predictions", predictions)
    if res.shape != pred.shape:
        raise ValueError(f"shape mismatch: residuals {res.shape}, predictions {pred.shape}")
    enc = ResidualEncoder(res.shape, max_value)
    for t in range(res.shape[1]):
        for i in range(res.shape[0]):
            enc.encode_line(res[i, t], pred[i, t])
    return enc.finish()


def decode_cube(data: bytes, predictions: np.ndarray, max_value: int) -> np.ndarray:
    """Decode ``encode_cube`` output; returns int32 residuals shaped like ``predictions``."""
    pred = _check_cube("predictions", predictions)
    dec = ResidualDecoder(data, pred.shape, max_value)
    out = np.empty(pred.shape, dtype=np.int32)
    for t in range(pred.shape[1]):
        for i in range(pred.shape[0]):
            out[i, t] = dec.decode_line(pred[i, t])
    return out
