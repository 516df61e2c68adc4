"""Integer Laplace coding tables that come out the same on every machine.

Both tables are computed with Python's :mod:`decimal` (software arithmetic, correctly
rounded ``exp`` and ``ln``) and Python integers only: no hardware floating point, so the
frequencies are identical on every platform, and encoder and decoder always code with the
same numbers.

Latent tables (:func:`latent_cdfs`)
    One table per (scale index ``s``, mean fraction index ``m``): the Laplace density of
    scale ``b = 2**(LOG2_SCALE_MIN + s / SCALE_STEPS)`` centred at ``floor(mu) + (m + 1/2) /
    NMU`` integrated over the unit intervals around the integers ``floor(mu) + d``, for
    ``d = -2 LATENT_MAX .. 2 LATENT_MAX``. Latents are clamped to ``|v| <= LATENT_MAX`` and
    means to ``|mu| <= LATENT_MAX``, so ``v - floor(mu)`` always lies in that window and no
    escape symbol is needed. The table index is ``s * NMU + m``.

Weight tables (:func:`geometric_cdf`)
    A two-sided geometric law ``P(k) ~ r**|k|`` on ``-R .. R``, ``r = exp(-1/b)``,
    ``b = 2**((j - 8) / 4)`` for a scale index ``j`` in ``0 .. NGEOMETRIC - 1``.

Frequencies are integers ``>= 1`` summing to ``2**PRECISION`` (see :func:`integer_freqs`);
the tables are returned as cumulative frequencies (a leading 0), the form the range coder in
:mod:`hsicomp.entropy.rangecoder` takes.
"""

from __future__ import annotations

import decimal
import math
from functools import lru_cache

import numpy as np

__all__ = [
    "LATENT_MAX",
    "LOG2_SCALE_MIN",
    "NGEOMETRIC",
    "NMU",
    "NSCALE",
    "PRECISION",
    "SCALE_STEPS",
    "geometric_bits",
    "geometric_cdf",
    "geometric_scale",
    "integer_freqs",
    "latent_cdfs",
]

PRECISION = 24
#: Largest latent magnitude; the latent tables cover ``v - floor(mu)`` in ``+-2 LATENT_MAX``.
LATENT_MAX = 31
#: Mean fractions per unit (the table uses the bucket centre ``(m + 1/2) / NMU``).
NMU = 16
#: Scale steps per octave, and the scale range in octaves.
SCALE_STEPS = 8
LOG2_SCALE_MIN = -4
LOG2_SCALE_MAX = 4
NSCALE = (LOG2_SCALE_MAX - LOG2_SCALE_MIN) * SCALE_STEPS + 1
#: Scale indices of the weight tables.
NGEOMETRIC = 96
_FRAC = 62  # fixed-point fraction bits of the integer computations
_ONE = 1 << _FRAC
_DIGITS = 40


def _context() -> decimal.Context:
    return decimal.Context(prec=_DIGITS, rounding=decimal.ROUND_HALF_EVEN)


def _fixed(ctx: decimal.Context, value: decimal.Decimal) -> int:
    """``floor(value * 2**_FRAC)`` as an integer."""
    return int(ctx.multiply(value, decimal.Decimal(_ONE)).to_integral_value(
        rounding=decimal.ROUND_FLOOR))


def _exp_neg(ctx: decimal.Context, num: int, den: int, scale: decimal.Decimal) -> int:
    """``exp(-(num / den) / scale)`` in fixed point."""
    arg = ctx.divide(ctx.divide(decimal.Decimal(num), decimal.Decimal(den)), scale)
    return _fixed(ctx, ctx.exp(-arg))


def integer_freqs(masses: np.ndarray, total: int = 1 << PRECISION) -> np.ndarray:
    """Integer frequencies ``>= 1`` summing to ``total`` for each row of integer ``masses``.

    Each entry gets ``1 + floor(m * (total - n) / sum)``; the units left over go, one each,
    to the entries with the largest remainders (ties to the lower index). All integer
    arithmetic (Python integers), so the result is exact; an all-zero row becomes uniform.
    """
    rows = np.atleast_2d(np.asarray(masses, dtype=object))
    n = rows.shape[1]
    if n < 1 or n > total:
        raise ValueError(f"cannot give {n} symbols frequencies summing to {total}")
    out = np.empty(rows.shape, dtype=np.int64)
    free = total - n
    for i, row in enumerate(rows):
        m = [int(v) for v in row]
        if min(m) < 0:
            raise ValueError("masses must be non-negative")
        s = sum(m)
        if s == 0:
            m, s = [1] * n, n
        share = [v * free for v in m]
        freq = [1 + v // s for v in share]
        left = total - sum(freq)
        if left:
            order = sorted(range(n), key=lambda k: (-(share[k] % s), k))
            for k in order[:left]:
                freq[k] += 1
        out[i] = freq
    return out


def _cumulative(freq: np.ndarray) -> np.ndarray:
    cdf = np.zeros(freq.shape[:-1] + (freq.shape[-1] + 1,), dtype=np.int64)
    np.cumsum(freq, axis=-1, out=cdf[..., 1:])
    return cdf


@lru_cache(maxsize=1)
def latent_cdfs() -> np.ndarray:
    """Cumulative frequencies of every latent table, shape ``(NSCALE * NMU, 4 LATENT_MAX + 2)``.

    Row ``s * NMU + m``, column ``d + 2 LATENT_MAX`` starts the interval of ``v - floor(mu) =
    d``. Read-only and cached.
    """
    ctx = _context()
    ln2 = ctx.ln(decimal.Decimal(2))
    width = 2 * LATENT_MAX
    ks = range(-width, width + 2)  # boundaries k - 1/2 - f of the symbols d = k .. k + 1
    masses = np.empty((NSCALE * NMU, 2 * width + 1), dtype=object)
    for s in range(NSCALE):
        log2b = decimal.Decimal(LOG2_SCALE_MIN) + decimal.Decimal(s) / SCALE_STEPS
        b = ctx.exp(ctx.multiply(ln2, log2b))
        u = _exp_neg(ctx, 1, 1, b)
        for m in range(NMU):
            # mean fraction f = (2m + 1) / (2 NMU); boundary t_k = k - 1/2 - f
            den = 2 * NMU
            first_pos = 1 if 2 * m + 1 <= NMU else 2  # smallest k with t_k >= 0
            pos = _exp_neg(ctx, (2 * first_pos - 1) * NMU - (2 * m + 1), den, b)
            neg = _exp_neg(ctx, (2 * m + 1) - (2 * first_pos - 3) * NMU, den, b)
            # G(t) = E(|t|) / 2 below 0, 1 - E(t) / 2 above, in units of 2**-(_FRAC + 1)
            cum = {}
            e = pos
            for k in range(first_pos, width + 2):
                cum[k] = 2 * _ONE - e
                e = (e * u) >> _FRAC
            e = neg
            for k in range(first_pos - 1, -width - 1, -1):
                cum[k] = e
                e = (e * u) >> _FRAC
            row = [cum[k + 1] - cum[k] for k in ks[:-1]]
            masses[s * NMU + m] = [v >> (_FRAC + 1 - 36) for v in row]
    cdf = _cumulative(integer_freqs(masses))
    cdf.flags.writeable = False
    return cdf


def geometric_scale(j: int) -> float:
    """Nominal scale ``b`` of weight table ``j`` (float, for choosing ``j`` only)."""
    return 2.0 ** ((j - 8) / 4)


def geometric_bits(q: np.ndarray, j: int) -> float:
    """Approximate code length in bits of integers ``q`` under weight table ``j``."""
    r = math.exp(-1.0 / geometric_scale(j))
    a = np.abs(np.asarray(q, dtype=np.float64))
    return float(-a.size * math.log2((1 - r) / (1 + r)) - math.log2(r) * a.sum())


@lru_cache(maxsize=256)
def geometric_cdf(j: int, r_max: int) -> np.ndarray:
    """Cumulative frequencies of weight table ``j`` on ``-r_max .. r_max`` (read-only)."""
    if not 0 <= j < NGEOMETRIC or not 0 <= r_max < (1 << 20):
        raise ValueError(f"bad weight table ({j}, {r_max})")
    ctx = _context()
    ln2 = ctx.ln(decimal.Decimal(2))
    b = ctx.exp(ctx.multiply(ln2, ctx.divide(decimal.Decimal(j - 8), decimal.Decimal(4))))
    u = _exp_neg(ctx, 1, 1, b)
    side = [0] * (r_max + 1)
    e = _ONE
    for k in range(r_max + 1):
        side[k] = e >> 26
        e = (e * u) >> _FRAC
    masses = side[:0:-1] + side
    cdf = _cumulative(integer_freqs(np.array([masses], dtype=object)))[0]
    cdf.flags.writeable = False
    return cdf
