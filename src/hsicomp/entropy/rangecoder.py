"""Range coder core: 64-bit state, 32-bit words, 24-bit probabilities.

The encoder writes exactly the 32-bit words of constriction's ``RangeEncoder``
(``constriction.stream.queue``) given the same symbol intervals, carries and closing words
included, and the decoder reads them like constriction's ``RangeDecoder``. A symbol is an
interval ``[cum, cum + freq)`` of ``2**24`` (``freq >= 1``); the models that produce the
intervals live with their users (:mod:`hsicomp.entropy.adaptive`,
:mod:`hsicomp.entropy.arm`).

The kernels are numba functions (``nogil``) meant to be called from other compiled
kernels, which keep the state in local variables while they code and store it back
afterwards. The state is a ``uint64`` array:

Encoder (``E_SLOTS`` = 5 entries)
    ``E_LOWER`` lower end and ``E_RANGE`` range of the interval (``RC_FULL`` as long as
    nothing is encoded), ``E_NINV`` the number of words held back until a pending carry is
    settled, ``E_FIRST`` the first of them (the others are all ``0xFFFFFFFF``) and
    ``E_POS`` the number of words written to the output so far. A fresh state is zeros with
    ``E_RANGE = RC_FULL`` (:func:`encoder_start`).

Decoder (``D_SLOTS`` = 4 entries)
    ``D_LOWER`` and ``D_RANGE`` as in the encoder, ``D_POINT`` the stream's bits in the
    decoder's 64-bit window and ``D_POS`` the number of words read (:func:`decoder_start`).

Decoding a symbol: ``scale = range >> RC_PRECISION``; the quantile
``q = (point - lower) // scale`` (``uint64`` arithmetic) lies in the symbol's interval, and
``q >= 2**24`` means invalid data; :func:`take` then advances the state past the interval.

Numba's on-disk cache checks only the source file of the function it compiled: after a
change to this module, delete the ``__pycache__`` entries (``*.nbi``, ``*.nbc``) of its
callers in :mod:`hsicomp.entropy.adaptive` and :mod:`hsicomp.entropy.arm`, or they keep
running the old kernels.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "D_LOWER",
    "D_POINT",
    "D_POS",
    "D_RANGE",
    "D_SLOTS",
    "E_FIRST",
    "E_LOWER",
    "E_NINV",
    "E_POS",
    "E_RANGE",
    "E_SLOTS",
    "RC_FULL",
    "RC_LOW",
    "RC_MASK",
    "RC_ONE",
    "RC_PRECISION",
    "RC_SLACK",
    "RC_WORD",
    "RC_ZERO",
    "decoder_start",
    "encode_intervals",
    "encoder_start",
    "exhausted",
    "num_words",
    "seal",
    "take",
]

# constants (uint64 so that numba keeps the state arithmetic in uint64)
#: Probability precision in bits: intervals are fractions of ``2**24``.
RC_PRECISION = np.uint64(24)
#: Word size in bits.
RC_WORD = np.uint64(32)
#: The range is kept ``>= 2**32``.
RC_LOW = np.uint64(1 << 32)
RC_MASK = np.uint64(0xFFFFFFFF)
RC_ONE = np.uint64(1)
RC_ZERO = np.uint64(0)
#: Range of a fresh state (nothing coded yet).
RC_FULL = np.uint64(0xFFFFFFFFFFFFFFFF)
#: Largest ``point - lower`` of an exhausted stream.
RC_SLACK = np.uint64((1 << 33) - 1)

# state slots
E_LOWER, E_RANGE, E_NINV, E_FIRST, E_POS = range(5)
E_SLOTS = 5
D_LOWER, D_RANGE, D_POINT, D_POS = range(4)
D_SLOTS = 4

_jit = njit(cache=True, nogil=True, error_model="numpy")
_inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")


def encoder_start(rc: np.ndarray) -> None:
    """Reset an encoder state (``uint64``, ``E_SLOTS`` entries) to the empty stream."""
    rc[:] = RC_ZERO
    rc[E_RANGE] = RC_FULL


@_jit
def encode_intervals(rc, out, ivals, n):
    """Encode the intervals [ivals[0, k], ivals[0, k] + ivals[1, k]) of 2**24, k < n.

    The words go to ``out`` (uint32), which needs room for rc[E_POS] + rc[E_NINV] + n.
    """
    lower = rc[E_LOWER]
    rng = rc[E_RANGE]
    ninv = np.int64(rc[E_NINV])
    first = rc[E_FIRST]
    pos = np.int64(rc[E_POS])
    for k in range(n):
        scale = rng >> RC_PRECISION
        rng = scale * np.uint64(ivals[1, k])
        new_lower = lower + scale * np.uint64(ivals[0, k])
        if ninv and new_lower + rng > new_lower:
            # the carry is settled: flush the held-back words
            if new_lower < lower:
                out[pos] = np.uint32((first + RC_ONE) & RC_MASK)
                rest = np.uint32(0)
            else:
                out[pos] = np.uint32(first)
                rest = np.uint32(0xFFFFFFFF)
            for j in range(1, ninv):
                out[pos + j] = rest
            pos += ninv
            ninv = 0
        lower = new_lower
        if rng < RC_LOW:
            rng <<= RC_WORD
            word = lower >> RC_WORD
            lower <<= RC_WORD
            if ninv:
                ninv += 1
            elif lower + rng > lower:
                out[pos] = np.uint32(word)
                pos += 1
            else:
                ninv = 1
                first = word
    rc[E_LOWER] = lower
    rc[E_RANGE] = rng
    rc[E_NINV] = np.uint64(ninv)
    rc[E_FIRST] = first
    rc[E_POS] = np.uint64(pos)


@_jit
def seal(rc, out):
    """Write the closing words after the coded ones (rc is kept); return the word count.

    out needs room for rc[E_POS] + rc[E_NINV] + 2 words.
    """
    pos = np.int64(rc[E_POS])
    lower = rc[E_LOWER]
    if rc[E_RANGE] == RC_FULL:  # nothing was encoded
        return pos
    point = lower + (RC_LOW - RC_ONE)
    ninv = np.int64(rc[E_NINV])
    if ninv:
        if point < lower:
            out[pos] = np.uint32((rc[E_FIRST] + RC_ONE) & RC_MASK)
            rest = np.uint32(0)
        else:
            out[pos] = np.uint32(rc[E_FIRST])
            rest = np.uint32(0xFFFFFFFF)
        for k in range(1, ninv):
            out[pos + k] = rest
        pos += ninv
    point_word = point >> RC_WORD
    out[pos] = np.uint32(point_word)
    pos += 1
    if (lower + rc[E_RANGE]) >> RC_WORD == point_word:
        out[pos] = np.uint32(0)
        pos += 1
    return pos


@_inline
def num_words(rc):
    """Words of the stream if it were sealed now (constriction's ``num_words``)."""
    n = np.int64(rc[E_POS] + rc[E_NINV])
    if rc[E_RANGE] == RC_FULL:
        return n
    point = rc[E_LOWER] + (RC_LOW - RC_ONE)
    if (rc[E_LOWER] + rc[E_RANGE]) >> RC_WORD == point >> RC_WORD:
        return n + 2
    return n + 1


@_jit
def decoder_start(words, rc):
    """Initial decoder state of the stream ``words``: the point is its first two words."""
    point = RC_ZERO
    nread = min(words.size, 2)
    for k in range(nread):
        point = (point << RC_WORD) | np.uint64(words[k])
    if nread == 1:
        point <<= RC_WORD
    rc[D_LOWER] = RC_ZERO
    rc[D_RANGE] = RC_FULL
    rc[D_POINT] = point
    rc[D_POS] = np.uint64(nread)


@_inline
def take(lower, rng, point, pos, words, scale, cum, freq):
    """Decoder state (lower, range, point, pos) after the decoded interval
    [cum, cum + freq) of 2**24; ``scale`` is ``range >> RC_PRECISION`` before it."""
    lower += scale * np.uint64(cum)
    rng = scale * np.uint64(freq)
    if rng < RC_LOW:
        lower <<= RC_WORD
        rng <<= RC_WORD
        point <<= RC_WORD
        if pos < words.size:
            point |= np.uint64(words[pos])
            pos += 1
    return lower, rng, point, pos


@_jit
def exhausted(rc, words):
    """constriction's ``maybe_exhausted``: all words read and the point near the bottom."""
    return rc[D_POS] >= np.uint64(words.size) and (
        rc[D_RANGE] == RC_FULL or rc[D_POINT] - rc[D_LOWER] < RC_SLACK
    )
