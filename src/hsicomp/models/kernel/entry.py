"""Compiled entry points: the functions Python calls (with the GIL released).

Python threads run independent ones in parallel. Decoder and encoder paths call the same
functions on the same per-column data. Constants passed to compiled functions are wrapped
(``np.int64(_LINES)``) so that numba compiles one version for all values rather than one per
literal.
"""

from __future__ import annotations

import numpy as np

from hsicomp.models.kernel.layers import (
    _decode,
    _decode_band0,
    _encode_line,
    _init_states,
    _spectral_input,
    _stack_step,
)
from hsicomp.models.kernel.layout import _BANDS, _LINES, _jit


@_jit
def _encode_band(mats, vecs, ix, values, enc, xs_band, spec, states, buf, rows, tiles, mode):
    """Encode the line ``values`` (C,) of a band into ``enc`` (F, cols).

    ``mode`` 1: also its innovation ``enc - xs_band`` into ``spec``; 2: then advance the
    spectral predictor (``states``) with it, its output replacing ``spec``.
    """
    _encode_line(mats, vecs, ix, values, enc, buf, rows)
    if mode >= 1:
        _spectral_input(enc, xs_band, spec)
    if mode == 2:
        _stack_step(mats, vecs, ix, np.int64(_BANDS), spec, states, tiles)


@_jit
def _push(mats, vecs, ix, values, enc, xs, band, spec, states, pred, buf, rows, tiles):
    """Decoder side, band ``band`` of a line: encode its values (C,) into ``enc`` and, unless
    it is the last band, advance the spectral predictor and predict band ``band + 1`` into
    ``pred`` (C,) from ``xs[band + 1]``."""
    _encode_line(mats, vecs, ix, values, enc, buf, rows)
    if band + 1 < xs.shape[0]:
        _spectral_input(enc, xs[band], spec)
        _stack_step(mats, vecs, ix, np.int64(_BANDS), spec, states, tiles)
        _decode(mats, vecs, ix, xs[band + 1], spec, pred, rows, tiles)


@_jit
def _predict_band0(vecs, ix, xs0, prev, out, rows):
    """Prediction of band 0 of a line into ``out`` (C,)."""
    _decode_band0(vecs, ix, xs0, prev, out, rows)


@_jit
def _line_steps(mats, vecs, ix, xs, states, b0, b1, tiles):
    """Line predictor of bands b0 .. b1 - 1 on one line: ``xs[i]`` (F, cols) in place."""
    for i in range(b0, b1):
        _stack_step(mats, vecs, ix, np.int64(_LINES), xs[i], states[i], tiles)


@_jit
def _band_job(mats, vecs, ix, xb, t0, slots, states, innov, pred0, first, last, buf, rows,
              tiles):
    """Line predictor of one band ``xb`` (T, C) over input lines t0 .. t0 + L - 1.

    ``slots`` (L + 1, F, cols): ``slots[0]`` holds the features of line t0; ``slots[k]`` becomes
    the output after line t0 + k and ``slots[k + 1]`` gets the features of the next line.
    Unless ``last``, ``innov[k]`` gets the innovation of line t0 + k + 1; for band 0
    (``first``), ``pred0[t0 + k]`` its prediction.
    """
    for k in range(slots.shape[0] - 1):
        t = t0 + k
        _stack_step(mats, vecs, ix, np.int64(_LINES), slots[k], states, tiles)
        _encode_line(mats, vecs, ix, xb[t + 1], slots[k + 1], buf, rows)
        if not last:
            _spectral_input(slots[k + 1], slots[k], innov[k])
        if first:
            _decode_band0(vecs, ix, slots[k], xb[t], pred0[t], rows)


@_jit
def _line_job(mats, vecs, ix, xs, innov, tc, pred, t, states, rows, tiles):
    """Spectral predictor and decoder on one line: bands 1 .. I-1 of ``pred[:, t]``.

    ``xs`` and ``innov`` are the chunk arrays of the line predictor (band, chunk line, F,
    cols); ``innov[:, tc]`` is replaced by the spectral outputs.
    """
    _init_states(states)
    for i in range(xs.shape[0] - 1):
        spec = innov[i, tc]
        _stack_step(mats, vecs, ix, np.int64(_BANDS), spec, states, tiles)
        _decode(mats, vecs, ix, xs[i + 1, tc], spec, pred[i + 1, t], rows, tiles)
