"""Coder memory: all state of an encoder or decoder in one int64 array, so that coding a
band-line is one cheap kernel call: a header, then the arrays of the model kernels (see
``_views``). The compiled calls on a memory, and a fresh one for a cube."""

from __future__ import annotations

import numpy as np

from hsicomp.entropy.adaptive.constants import (
    _CTX_INIT_N,
    _LEFTOVER,
    _LUT_SIZE,
    _NCTX,
    _NHIST,
    _NPAT,
    _NR,
    _NSYM,
    _OK,
    _PAT_INIT,
    _inline,
    _jit,
)
from hsicomp.entropy.adaptive.kernels import _H_TOT, _decode_line, _encode_line
from hsicomp.entropy.adaptive.tables import _initial_tables
from hsicomp.entropy.rangecoder import E_NINV, E_POS, E_SLOTS, encoder_start, exhausted, seal

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
