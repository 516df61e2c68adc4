"""Initial tables: the prior histograms, their cumulative frequencies and lookup tables,
and the compiled functions that rebuild a distribution from its counts."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from hsicomp.entropy.adaptive.constants import (
    _LUT_SHIFT,
    _LUT_SIZE,
    _NHIST,
    _NSCALE,
    _NSIGN,
    _NSYM,
    _PRIOR_WEIGHT,
    _TOTAL,
    _ZERO,
    _jit,
)


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
