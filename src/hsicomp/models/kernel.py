"""Bit-reproducible float32 LineRWKV inference on the CPU (numba).

An encoder and a decoder of a predictive codec must compute the same predictions to the last
bit, on any machine: a misprediction by one ulp near a rounding boundary corrupts everything
decoded after it. This module evaluates trained LineRWKV weights (see ``linerwkv.py`` for the
data flow) in a way that makes that hold:

* only IEEE-754 float32 basic operations (``+ - * /``, ``sqrt``, comparisons), compiled by
  numba without fast-math, so the compiler may neither reassociate nor fuse multiply-adds;
* every sum (dot products, convolutions, LayerNorm mean and variance) is an explicit loop over
  its terms in index order; no BLAS, ``np.dot`` or ``np.sum``;
* ``exp``, ``sigmoid`` and ``erf`` are computed here from those operations (range reduction and
  fixed polynomials), never by libm, whose results differ between platforms;
* each column of each band or line sequence is computed by the same per-element arithmetic
  whatever the batching, so ``predict_cube`` (all lines of a known cube at once, the encoder
  side) and ``KernelStepper`` (band by band, the decoder side) give identical bits.
  Vectorisation across columns and threads across bands or lines change nothing per element.

The arithmetic follows the torch model with these fixed choices: LayerNorm is
``(x - mean) * (1 / sqrt(var + eps)) * g + b`` with the biased variance; a convolution or linear
layer starts from its bias (or 0) and adds the terms in input order (taps outer, channels
inner); each WKV sum needs one exponential, since one of its two weights is ``e^0 = 1``;
``sigmoid(r) * y`` is ``y / (1 + e^-r)``, with r clamped at -60; ``exp`` flushes results below
``e^-64`` to 0 (no subnormal numbers anywhere near it). Predictions differ from the torch
forward about as much as its float32 and float64 results differ from each other (1e-6 to 1e-5
on the normalised scale).

Floating-point state that must be left at its defaults: round to nearest and gradual underflow
(no flush-to-zero / denormals-are-zero), which is how Python, numpy and torch run.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from hsicomp.models.linerwkv import LineRWKV, LineRWKVConfig
from hsicomp.models.rwkv import PP_INIT

__all__ = [
    "ARITHMETIC_VERSION",
    "KernelStepper",
    "KernelWeights",
    "default_threads",
    "erf32",
    "exp32",
    "gelu32",
    "predict_cube",
    "predict_stepwise",
    "sigmoid32",
]

#: Identifies the arithmetic of this module: raised whenever a change could alter any bit of
#: any prediction (the golden-hash tests fail first). Codecs store it in their files, so a
#: decoder with other arithmetic refuses a file instead of decoding it wrongly.
ARITHMETIC_VERSION = 1

#: Compilation options of every kernel function: cached, IEEE division semantics (no zero
#: checks), no fast-math, and the GIL released so that Python threads run jobs in parallel.
_jit = njit(cache=True, error_model="numpy", nogil=True)
#: The same, compiled into their (single) caller rather than separately.
_jit_inline = njit(cache=True, error_model="numpy", nogil=True, inline="always")

_F32 = np.float32
_ZERO = _F32(0.0)
_ONE = _F32(1.0)
_TWO = _F32(2.0)
_HALF = _F32(0.5)
_LN_EPS = _F32(1e-5)
_PP_INIT = _F32(PP_INIT)
_INV_SQRT2 = _F32(1.0 / math.sqrt(2.0))

# exp(x) = 2^k e^r with k = round(x / ln 2), r = x - k ln 2 (ln 2 split in a 12-bit head, so
# k * head is exact, and a tail); e^r = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, P fitted here
# (weighted minimax, relative error 3e-9 before float32 rounding).
_EXP_LO = _F32(-64.0)  # e^x is 0 below this (1.6e-28: no subnormal results)
_EXP_HI = _F32(88.0)  # and saturates at e^88 above it (no infinities)
_LOG2E = _F32(1.0 / math.log(2.0))
_ROUNDER = _F32(1.5 * 2**23)  # (y + R) - R rounds |y| < 2^22 to an integer
_LN2_HI = _F32(2839.0 / 4096.0)
_LN2_LO = _F32(math.log(2.0) - 2839.0 / 4096.0)
_EXP_P0 = _F32(0.4999999403953552)
_EXP_P1 = _F32(0.1666651964187622)
_EXP_P2 = _F32(0.04166840761899948)
_EXP_P3 = _F32(0.008368914015591145)
_EXP_P4 = _F32(0.0013814191333949566)

# erf(x) = x Q(x^2) for |x| < 1, Q of degree 5 fitted here (absolute error 2e-8); for |x| >= 1
# erfc(|x|) = t G(t) e^(-x^2), t = 1 / (1 + p |x|), G of degree 4 fitted on 1 <= |x| <= 9
# (absolute error 3e-10). Both fits are weighted minimax, before float32 rounding.
_ERF_Q0 = _F32(1.1283788681030273)
_ERF_Q1 = _F32(-0.3761194050312042)
_ERF_Q2 = _F32(0.11278064548969269)
_ERF_Q3 = _F32(-0.02666381001472473)
_ERF_Q4 = _F32(0.004870702978223562)
_ERF_Q5 = _F32(-0.0005462926346808672)
_ERFC_P = _F32(0.35)
_ERFC_G0 = _F32(0.20845243334770203)
_ERFC_G1 = _F32(0.10304434597492218)
_ERFC_G2 = _F32(0.5101870894432068)
_ERFC_G3 = _F32(-0.39154061675071716)
_ERFC_G4 = _F32(0.5701590776443481)

_SIGMOID_LO = _F32(-60.0)  # sigmoid clamps its argument here: sigmoid(-60) = 8.8e-27

# Column padding: every feature row of a tile holds a multiple of 16 floats (64 bytes), so
# rows stay aligned for vector loads and stores.
_ALIGN = 16

# Scratch of a thread: feature buffers (F, cols) and rows (cols,): LayerNorm mean and scale,
# and the three shifted copies of a line seen by the encoder's first convolution.
_NBUF = 8
_NROWS = 5

# Recurrent state of one block, stacked as (_NSTATE, F, columns).
_FFN_XX, _ATT_XX, _AA, _BB, _PP = range(5)
_NSTATE = 5

# Matrices of one block, in mats[stack base + 7 * block + m].
_ATT_K, _ATT_V, _ATT_R, _ATT_O, _FFN_K, _FFN_R, _FFN_V = range(7)
_NMAT_BLOCK = 7
# Vectors of one block, in vecs[stack base + 2 + 11 * block + v] (the stack base holds ln0).
_LN1_G, _LN1_B, _LN2_G, _LN2_B, _MIX_K, _MIX_V, _MIX_R, _DECAY, _FIRST, _FMIX_K, _FMIX_R = range(11)
_NVEC_BLOCK = 11

# Entries of the index array (sizes and base rows of each part of mats and vecs).
_IX_WIDTH, _IX_NENC, _IX_NDEC = 0, 1, 2
_IX_NBLOCKS = 3  # + stack (0: line predictor, 1: spectral predictor)
_IX_MENC, _IX_MDEC = 5, 6
_IX_MSTACK = 7  # + stack
_IX_VENC, _IX_VDEC = 9, 10
_IX_VSTACK = 11  # + stack
_IX_SIZE = 13
_LINES, _BANDS = 0, 1


# ---------------------------------------------------------------------------------------------
# Elementary functions


@intrinsic
def _pow2(typingctx, k):
    """``2**k`` for an integer-valued float32 ``k`` in [-126, 127], from its exponent bits."""
    if k != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        n = builder.fptosi(args[0], i32)
        bits = builder.shl(builder.add(n, ir.Constant(i32, 127)), ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@_jit
def _exp(x):
    """``e^x`` in float32: 0 below -64, ``e^88`` above 88, within 1 ulp in between."""
    xc = min(max(x, _EXP_LO), _EXP_HI)
    k = (xc * _LOG2E + _ROUNDER) - _ROUNDER
    r = (xc - k * _LN2_HI) - k * _LN2_LO
    p = (((_EXP_P4 * r + _EXP_P3) * r + _EXP_P2) * r + _EXP_P1) * r + _EXP_P0
    y = ((r * r) * p + r) + _ONE
    y = y * _pow2(k)
    return y if x >= _EXP_LO else _ZERO


@_jit
def _sigmoid_den(x):
    """``1 + e^-x`` with x clamped at -60; ``sigmoid(x) * y`` is computed as ``y / (1 + e^-x)``."""
    return _ONE + _exp(-max(x, _SIGMOID_LO))


@_jit
def _sigmoid(x):
    """``1 / (1 + e^-x)``, with x clamped at -60."""
    return _ONE / _sigmoid_den(x)


@_jit
def _erf_odd(x):
    """``erf(x)`` for ``|x| < 1``."""
    s = x * x
    return x * (((((_ERF_Q5 * s + _ERF_Q4) * s + _ERF_Q3) * s + _ERF_Q2) * s + _ERF_Q1) * s
                + _ERF_Q0)


@_jit
def _erfc_tail(a):
    """``erfc(a)`` for ``a >= 1`` (finite for any ``a >= 0``)."""
    t = _ONE / (_ONE + _ERFC_P * a)
    g = (((_ERFC_G4 * t + _ERFC_G3) * t + _ERFC_G2) * t + _ERFC_G1) * t + _ERFC_G0
    return (t * g) * _exp(-(a * a))


@_jit
def _erf(x):
    """``erf(x)`` in float32 (absolute error below 2e-7)."""
    # Both parts are computed and one is selected (branch-free, so loops vectorise).
    y = _ONE - _erfc_tail(abs(x))
    tail = -y if x < _ZERO else y
    near = _erf_odd(x)
    return near if abs(x) < _ONE else tail


@_jit
def _gelu(x):
    """Exact (erf) GELU ``x (1 + erf(x / sqrt 2)) / 2``; below -sqrt 2, ``1 + erf`` is taken as
    ``erfc(-x / sqrt 2)``, without cancellation."""
    h = x * _INV_SQRT2
    q = _erfc_tail(abs(h))
    tail = q if h < _ZERO else _TWO - q
    near = _ONE + _erf_odd(h)
    one_plus_erf = near if abs(h) < _ONE else tail
    return (_HALF * x) * one_plus_erf


@_jit
def _map_exp(x, out):
    for n in range(x.size):
        out[n] = _exp(x[n])


@_jit
def _map_sigmoid(x, out):
    for n in range(x.size):
        out[n] = _sigmoid(x[n])


@_jit
def _map_erf(x, out):
    for n in range(x.size):
        out[n] = _erf(x[n])


@_jit
def _map_gelu(x, out):
    for n in range(x.size):
        out[n] = _gelu(x[n])


def _elementwise(kernel, x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.empty_like(flat)
    kernel(flat, out)
    return out.reshape(np.shape(x))


def exp32(x: np.ndarray) -> np.ndarray:
    """The kernel's ``e^x`` on a float32 array (0 below -64, saturating at ``e^88``)."""
    return _elementwise(_map_exp, x)


def sigmoid32(x: np.ndarray) -> np.ndarray:
    """The kernel's logistic sigmoid on a float32 array."""
    return _elementwise(_map_sigmoid, x)


def erf32(x: np.ndarray) -> np.ndarray:
    """The kernel's ``erf`` on a float32 array."""
    return _elementwise(_map_erf, x)


def gelu32(x: np.ndarray) -> np.ndarray:
    """The kernel's exact (erf) GELU on a float32 array."""
    return _elementwise(_map_gelu, x)


# ---------------------------------------------------------------------------------------------
# Layers on tiles: features-major arrays (F, columns); every loop over columns runs over the
# first n_cols columns, so the per-column arithmetic never depends on the other columns.


@_jit
def _fill(out, vec, n_cols):
    """``out[j, n] = vec[j]``."""
    for j in range(out.shape[0]):
        v = vec[j]
        row = out[j]
        for n in range(n_cols):
            row[n] = v


@_jit
def _matmul(w, x, out, n_cols):
    """``out[j, n] += sum_k w[j, k] * x[k, n]``, the terms added one by one in order of k.

    Four output rows and four inputs at a time (the same additions, in the same order, as one
    row and one input at a time), which keeps the loads per multiply-add low. The sizes of
    ``w`` are multiples of 4.
    """
    n_out, n_in = w.shape
    for j in range(0, n_out, 4):
        a0, a1, a2, a3 = out[j], out[j + 1], out[j + 2], out[j + 3]
        for k in range(0, n_in, 4):
            x0, x1, x2, x3 = x[k], x[k + 1], x[k + 2], x[k + 3]
            p0, p1, p2, p3 = w[j, k], w[j, k + 1], w[j, k + 2], w[j, k + 3]
            q0, q1, q2, q3 = w[j + 1, k], w[j + 1, k + 1], w[j + 1, k + 2], w[j + 1, k + 3]
            r0, r1, r2, r3 = w[j + 2, k], w[j + 2, k + 1], w[j + 2, k + 2], w[j + 2, k + 3]
            s0, s1, s2, s3 = w[j + 3, k], w[j + 3, k + 1], w[j + 3, k + 2], w[j + 3, k + 3]
            for n in range(n_cols):
                y0, y1, y2, y3 = x0[n], x1[n], x2[n], x3[n]
                a0[n] = (((a0[n] + p0 * y0) + p1 * y1) + p2 * y2) + p3 * y3
                a1[n] = (((a1[n] + q0 * y0) + q1 * y1) + q2 * y2) + q3 * y3
                a2[n] = (((a2[n] + r0 * y0) + r1 * y1) + r2 * y2) + r3 * y3
                a3[n] = (((a3[n] + s0 * y0) + s1 * y1) + s2 * y2) + s3 * y3


@_jit
def _linear(w, x, out, n_cols):
    """``out = w @ x`` on the first n_cols columns (sums start from 0)."""
    for j in range(out.shape[0]):
        row = out[j]
        for n in range(n_cols):
            row[n] = _ZERO
    _matmul(w, x, out, n_cols)


@_jit
def _ln_stats(x, rows, n_cols):
    """LayerNorm statistics of each column: mean into ``rows[0]``, 1 / std into ``rows[1]``."""
    width = x.shape[0]
    fw = _F32(width)
    mean = rows[0]
    scale = rows[1]
    for n in range(n_cols):
        mean[n] = _ZERO
        scale[n] = _ZERO
    for f in range(width):
        xf = x[f]
        for n in range(n_cols):
            mean[n] = mean[n] + xf[n]
    for n in range(n_cols):
        mean[n] = mean[n] / fw
    for f in range(width):
        xf = x[f]
        for n in range(n_cols):
            d = xf[n] - mean[n]
            scale[n] = scale[n] + d * d
    for n in range(n_cols):
        scale[n] = _ONE / np.sqrt(scale[n] / fw + _LN_EPS)


@_jit
def _layer_norm(x, g, b, out, rows, n_cols):
    """LayerNorm over the features of each column of ``x`` into ``out``."""
    _ln_stats(x, rows, n_cols)
    mean, scale = rows[0], rows[1]
    for f in range(x.shape[0]):
        xf = x[f]
        of = out[f]
        gf = g[f]
        bf = b[f]
        for n in range(n_cols):
            of[n] = ((xf[n] - mean[n]) * scale[n]) * gf + bf


@_jit
def _layer_norm_inplace(x, g, b, rows, n_cols):
    """``_layer_norm`` with ``out = x`` (one array in the loop, so that it vectorises)."""
    _ln_stats(x, rows, n_cols)
    mean, scale = rows[0], rows[1]
    for f in range(x.shape[0]):
        xf = x[f]
        gf = g[f]
        bf = b[f]
        for n in range(n_cols):
            xf[n] = ((xf[n] - mean[n]) * scale[n]) * gf + bf


@_jit
def _gelu_rows(x, n_cols):
    """GELU in place."""
    for f in range(x.shape[0]):
        xf = x[f]
        for n in range(n_cols):
            xf[n] = _gelu(xf[n])


@_jit_inline
def _block_step(mats, vecs, m0, v0, x, st, buf, rows, n_cols):
    """One RWKV-4 block on one token per column: ``x`` (F, cols) in place, state ``st``."""
    width = x.shape[0]
    xa, mk, mv, mr, k, v, r = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6]
    # TimeMix on ln1(x), mixed with the previous token's ln1 output.
    _layer_norm(x, vecs[v0 + _LN1_G], vecs[v0 + _LN1_B], xa, rows, n_cols)
    mix_k, mix_v, mix_r = vecs[v0 + _MIX_K], vecs[v0 + _MIX_V], vecs[v0 + _MIX_R]
    att_xx = st[_ATT_XX]
    for f in range(width):
        ck, cv, cr = mix_k[f], mix_v[f], mix_r[f]
        for n in range(n_cols):
            prev = att_xx[f, n]
            d = xa[f, n] - prev
            mk[f, n] = prev + d * ck
            mv[f, n] = prev + d * cv
            mr[f, n] = prev + d * cr
            att_xx[f, n] = xa[f, n]
    _linear(mats[m0 + _ATT_K], mk, k, n_cols)
    _linear(mats[m0 + _ATT_V], mv, v, n_cols)
    _linear(mats[m0 + _ATT_R], mr, r, n_cols)
    # WKV with the log-sum-exp state (aa, bb, pp); y = sigmoid(r) * wkv goes to mk.
    decay, first = vecs[v0 + _DECAY], vecs[v0 + _FIRST]
    aa, bb, pp = st[_AA], st[_BB], st[_PP]
    for f in range(width):
        w = decay[f]
        u = first[f]
        for n in range(n_cols):
            kk = k[f, n]
            vv = v[f, n]
            a = aa[f, n]
            b = bb[f, n]
            p = pp[f, n]
            ww = u + kk
            e = _exp(-abs(p - ww))
            e1 = _ONE if p >= ww else e
            e2 = e if p >= ww else _ONE
            # sigmoid(r) * wkv with one division
            mk[f, n] = (e1 * a + e2 * vv) / ((e1 * b + e2) * _sigmoid_den(r[f, n]))
            ww = p - w
            e = _exp(-abs(ww - kk))
            e1 = _ONE if ww >= kk else e
            e2 = e if ww >= kk else _ONE
            aa[f, n] = e1 * a + e2 * vv
            bb[f, n] = e1 * b + e2
            pp[f, n] = ww if ww >= kk else kk
    _linear(mats[m0 + _ATT_O], mk, mv, n_cols)
    for f in range(width):
        for n in range(n_cols):
            x[f, n] = x[f, n] + mv[f, n]
    # ChannelMix on ln2(x): sigmoid(r) * value(relu(key)^2).
    _layer_norm(x, vecs[v0 + _LN2_G], vecs[v0 + _LN2_B], xa, rows, n_cols)
    mix_k, mix_r = vecs[v0 + _FMIX_K], vecs[v0 + _FMIX_R]
    ffn_xx = st[_FFN_XX]
    for f in range(width):
        ck, cr = mix_k[f], mix_r[f]
        for n in range(n_cols):
            prev = ffn_xx[f, n]
            d = xa[f, n] - prev
            mk[f, n] = prev + d * ck
            mr[f, n] = prev + d * cr
            ffn_xx[f, n] = xa[f, n]
    _linear(mats[m0 + _FFN_K], mk, k, n_cols)
    for f in range(width):
        for n in range(n_cols):
            kk = max(k[f, n], _ZERO)
            k[f, n] = kk * kk
    _linear(mats[m0 + _FFN_R], mr, r, n_cols)
    _linear(mats[m0 + _FFN_V], k, v, n_cols)
    for f in range(width):
        for n in range(n_cols):
            x[f, n] = x[f, n] + v[f, n] / _sigmoid_den(r[f, n])


@_jit
def _stack_step(mats, vecs, ix, stack, x, states, buf, rows, n_cols):
    """Advance a stack of blocks by one token per column; ``x`` becomes its output.

    ``states`` is ``(n_blocks, _NSTATE, F, cols)``.
    """
    vb = ix[_IX_VSTACK + stack]
    mb = ix[_IX_MSTACK + stack]
    _layer_norm_inplace(x, vecs[vb], vecs[vb + 1], rows, n_cols)  # ln0 of the first block
    for blk in range(ix[_IX_NBLOCKS + stack]):
        m0 = mb + _NMAT_BLOCK * blk
        v0 = vb + 2 + _NVEC_BLOCK * blk
        _block_step(mats, vecs, m0, v0, x, states[blk], buf, rows, n_cols)


@_jit
def _init_states(states):
    """The empty recurrent state: zeros, and ``pp`` at the initial running maximum."""
    states[:] = _ZERO
    for blk in range(states.shape[0]):
        states[blk, _PP] = _PP_INIT


@_jit
def _shift_row(src, n_valid, tap, dst):
    """``dst[n] = src[n + tap - 1]`` where ``0 <= n + tap - 1 < n_valid``, else 0 (zero padding
    of a convolution tap)."""
    dst[:] = _ZERO
    if tap == 0:
        shifted = dst[1:]
        for n in range(min(n_valid, shifted.shape[0])):
            shifted[n] = src[n]
    elif tap == 1:
        for n in range(n_valid):
            dst[n] = src[n]
    else:
        shifted = src[1:]
        for n in range(n_valid - 1):
            dst[n] = shifted[n]


@_jit_inline
def _encode_line(mats, vecs, ix, line, n_valid, out, buf, rows):
    """Line encoder: values ``line`` (first n_valid used) -> features ``out`` (F, cols).

    Convolutions see zeros outside columns ``0 .. n_valid - 1``; the columns of ``out`` from
    n_valid on are computed from zeros, like any other column, and never used.
    """
    n_cols = out.shape[1]
    n_enc = ix[_IX_NENC]
    ve = ix[_IX_VENC]
    me = ix[_IX_MENC]
    left, mid, right = rows[2], rows[3], rows[4]  # the line seen by the three taps
    for tap, row in enumerate((left, mid, right)):
        _shift_row(line, n_valid, tap, row)
    for layer in range(n_enc):
        base = ve + 3 + 3 * layer  # convolution bias, LayerNorm weight and bias
        h = out if layer == n_enc - 1 else buf[3]
        if layer == 0:
            _fill(h, vecs[base], n_cols)
            w0, w1, w2 = vecs[ve], vecs[ve + 1], vecs[ve + 2]
            for j in range(h.shape[0]):
                a, b, c = w0[j], w1[j], w2[j]
                hj = h[j]
                for n in range(n_cols):
                    hj[n] = ((hj[n] + a * left[n]) + b * mid[n]) + c * right[n]
        else:
            prev = buf[3]  # the previous layer's output
            for tap in range(3):
                for f in range(prev.shape[0]):
                    _shift_row(prev[f], n_valid, tap, buf[tap, f])
            _fill(h, vecs[base], n_cols)
            for tap in range(3):
                _matmul(mats[me + 3 * (layer - 1) + tap], buf[tap], h, n_cols)
        _layer_norm_inplace(h, vecs[base + 1], vecs[base + 2], rows, n_cols)
        _gelu_rows(h, n_cols)


@_jit_inline
def _decode(mats, vecs, ix, feats, out, buf, rows, n_cols):
    """Per-column decoder of features (F, cols) into ``out`` (its length: the columns kept)."""
    vd = ix[_IX_VDEC]
    md = ix[_IX_MDEC]
    h = feats
    for layer in range(ix[_IX_NDEC] - 1):
        dst = buf[layer % 2]
        _fill(dst, vecs[vd + 3 * layer], n_cols)
        _matmul(mats[md + layer], h, dst, n_cols)
        _layer_norm_inplace(dst, vecs[vd + 3 * layer + 1], vecs[vd + 3 * layer + 2], rows,
                            n_cols)
        _gelu_rows(dst, n_cols)
        h = dst
    last = vd + 3 * (ix[_IX_NDEC] - 1)
    w = vecs[last]
    b = vecs[last + 1][0]
    n_out = out.shape[0]
    for n in range(n_out):
        out[n] = b
    for k in range(h.shape[0]):
        wk = w[k]
        hk = h[k]
        for n in range(n_out):
            out[n] = out[n] + wk * hk[n]


@_jit
def _decode_band0(vecs, ix, xs0, prev, out):
    """Band 0: the previous line ``prev`` plus a 1x1 projection of the line-predictor output."""
    last = ix[_IX_VDEC] + 3 * (ix[_IX_NDEC] - 1)
    w = vecs[last + 2]
    b = vecs[last + 3][0]
    n_out = out.shape[0]
    for n in range(n_out):
        out[n] = b
    for k in range(xs0.shape[0]):
        wk = w[k]
        hk = xs0[k]
        for n in range(n_out):
            out[n] = out[n] + wk * hk[n]
    for n in range(n_out):
        out[n] = out[n] + prev[n]


@_jit
def _spectral_input(enc, xs, spec, n_cols):
    """Innovation ``enc - xs`` of a band, the spectral predictor's input."""
    for f in range(enc.shape[0]):
        for n in range(n_cols):
            spec[f, n] = enc[f, n] - xs[f, n]


@_jit
def _decoder_input(xs, spec, feats, n_cols):
    """Decoder features ``xs + spec`` of a band."""
    for f in range(xs.shape[0]):
        for n in range(n_cols):
            feats[f, n] = xs[f, n] + spec[f, n]


# ---------------------------------------------------------------------------------------------
# Compiled entry points (they release the GIL; Python threads run independent ones in parallel).
# Decoder and encoder paths call the same functions on the same per-column data. Constants
# passed to compiled functions are wrapped (``np.int64(_LINES)``) so that numba compiles one
# version for all values rather than one per literal.


@_jit
def _encode_band(mats, vecs, ix, values, enc, xs_band, spec, states, buf, rows, mode):
    """Encode the line ``values`` (C,) of a band into ``enc`` (F, cols).

    ``mode`` 1: also its innovation ``enc - xs_band`` into ``spec``; 2: then advance the
    spectral predictor (``states``) with it, its output replacing ``spec``.
    """
    n_cols = enc.shape[1]
    _encode_line(mats, vecs, ix, values, values.shape[0], enc, buf, rows)
    if mode >= 1:
        _spectral_input(enc, xs_band, spec, n_cols)
    if mode == 2:
        _stack_step(mats, vecs, ix, np.int64(_BANDS), spec, states, buf, rows, n_cols)


@_jit
def _predict(mats, vecs, ix, first, xs_band, spec, prev, out, buf, rows):
    """Prediction of one band of a line into ``out`` (C,).

    Band 0 (``first``): the band's previous line ``prev`` plus a projection of its line-predictor
    output ``xs_band``; other bands: the decoder of ``xs_band + spec`` (spectral output).
    """
    if first:
        _decode_band0(vecs, ix, xs_band, prev, out)
    else:
        feats = buf[_NBUF - 1]
        _decoder_input(xs_band, spec, feats, xs_band.shape[1])
        _decode(mats, vecs, ix, feats, out, buf, rows, xs_band.shape[1])


@_jit
def _band_job(mats, vecs, ix, xb, t0, slots, states, innov, pred0, first, last, buf, rows):
    """Line predictor of one band ``xb`` (T, C) over input lines t0 .. t0 + L - 1.

    ``slots`` (L + 1, F, cols): ``slots[0]`` holds the features of line t0; ``slots[k]`` becomes
    the output after line t0 + k and ``slots[k + 1]`` gets the features of the next line.
    Unless ``last``, ``innov[k]`` gets the innovation of line t0 + k + 1; for band 0
    (``first``), ``pred0[t0 + k]`` its prediction.
    """
    n_cols = slots.shape[2]
    for k in range(slots.shape[0] - 1):
        t = t0 + k
        _stack_step(mats, vecs, ix, np.int64(_LINES), slots[k], states, buf, rows, n_cols)
        _encode_band(mats, vecs, ix, xb[t + 1], slots[k + 1], slots[k], innov[k], states, buf,
                     rows, 0 if last else 1)
        if first:
            _decode_band0(vecs, ix, slots[k], xb[t], pred0[t])


@_jit
def _line_job(mats, vecs, ix, xs, innov, tc, pred, t, states, buf, rows):
    """Spectral predictor and decoder on one line: bands 1 .. I-1 of ``pred[:, t]``.

    ``xs`` and ``innov`` are the chunk arrays of the line predictor (band, chunk line, F,
    cols); ``innov[:, tc]`` is replaced by the spectral outputs.
    """
    n_cols = xs.shape[3]
    _init_states(states)
    for i in range(xs.shape[0] - 1):
        spec = innov[i, tc]
        _stack_step(mats, vecs, ix, np.int64(_BANDS), spec, states, buf, rows, n_cols)
        _predict(mats, vecs, ix, np.bool_(False), xs[i + 1, tc], spec, spec[0], pred[i + 1, t],
                 buf, rows)


# ---------------------------------------------------------------------------------------------
# Python API


def _padded(n_cols: int) -> int:
    return -(-n_cols // _ALIGN) * _ALIGN


def _aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous float32 array whose data starts on a 64-byte boundary."""
    size = math.prod(shape)
    raw = np.empty(size + _ALIGN, dtype=np.float32)
    start = (-raw.ctypes.data // 4) % _ALIGN
    return raw[start : start + size].reshape(shape)


def _numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().float().numpy()
    return np.asarray(value)


def _count(state: Mapping[str, object], prefix: str, suffix: str) -> int:
    n = 0
    while f"{prefix}{n}{suffix}" in state:
        n += 1
    return n


@dataclass(frozen=True, eq=False)
class KernelWeights:
    """LineRWKV weights packed for the kernel: contiguous float32 arrays.

    ``mats`` (M, F, F) holds every F x F matrix (encoder convolution taps, decoder layers,
    block projections); ``vecs`` (V, F) every vector (biases, LayerNorm parameters, token-shift
    mixes, ``exp(time_decay)`` computed with this module's exp, ``time_first``); ``index``
    locates the parts. Build with :meth:`from_model` or :meth:`from_state_dict`.
    """

    config: LineRWKVConfig
    mats: np.ndarray
    vecs: np.ndarray
    index: np.ndarray

    @classmethod
    def from_model(cls, model: LineRWKV) -> KernelWeights:
        """Pack the weights of a torch model."""
        return cls.from_state_dict(model.state_dict())

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor | np.ndarray]) -> KernelWeights:
        """Pack a LineRWKV state dict (sizes read from its keys); values are cast to float32."""

        def get(key: str) -> np.ndarray:
            return _numpy(state[key]).astype(np.float32)

        width = get("encoder.conv_in.weight").shape[0]
        if width % 4:
            raise ValueError(f"the kernel needs a width that is a multiple of 4, got {width}")
        config = LineRWKVConfig(
            width=width,
            n_enc=1 + _count(state, "encoder.convs.", ".weight"),
            n_lines=_count(state, "blocks_lines.", ".ln1.weight"),
            n_bands=_count(state, "blocks_bands.", ".ln1.weight"),
            n_dec=1 + _count(state, "decoder.convs.", ".weight"),
        )
        mats: list[np.ndarray] = []
        vecs: list[np.ndarray] = []
        index = np.zeros(_IX_SIZE, dtype=np.int64)
        index[_IX_WIDTH], index[_IX_NENC], index[_IX_NDEC] = width, config.n_enc, config.n_dec
        index[_IX_NBLOCKS + _LINES] = config.n_lines
        index[_IX_NBLOCKS + _BANDS] = config.n_bands

        def scalar_row(value: np.ndarray) -> np.ndarray:
            return np.full(width, value.reshape(()), dtype=np.float32)

        # Encoder: conv_in taps, then per layer (conv bias, LayerNorm weight and bias) and the
        # taps of the F x F convolutions.
        index[_IX_MENC], index[_IX_VENC] = len(mats), len(vecs)
        conv_in = get("encoder.conv_in.weight")[:, 0, :]  # (F, 3)
        vecs += [conv_in[:, 0], conv_in[:, 1], conv_in[:, 2]]
        for layer in range(config.n_enc):
            conv = "encoder.conv_in" if layer == 0 else f"encoder.convs.{layer - 1}"
            norm = "encoder.norm_in" if layer == 0 else f"encoder.norms.{layer - 1}"
            vecs += [get(f"{conv}.bias"), get(f"{norm}.weight"), get(f"{norm}.bias")]
            if layer > 0:
                weight = get(f"{conv}.weight")  # (F, F, 3)
                mats += [weight[:, :, tap] for tap in range(3)]
        # Decoder: per hidden layer (bias, LayerNorm), then output and band-0 projections.
        index[_IX_MDEC], index[_IX_VDEC] = len(mats), len(vecs)
        for layer in range(config.n_dec - 1):
            mats.append(get(f"decoder.convs.{layer}.weight")[:, :, 0])
            vecs += [
                get(f"decoder.convs.{layer}.bias"),
                get(f"decoder.norms.{layer}.weight"),
                get(f"decoder.norms.{layer}.bias"),
            ]
        vecs += [
            get("decoder.conv_out.weight")[0, :, 0],
            scalar_row(get("decoder.conv_out.bias")),
            get("bandzerodec.conv_out.weight")[0, :, 0],
            scalar_row(get("bandzerodec.conv_out.bias")),
        ]
        # Block stacks: ln0, then per block 11 vectors and 7 matrices.
        for stack, name, n_blocks in ((_LINES, "blocks_lines", config.n_lines),
                                      (_BANDS, "blocks_bands", config.n_bands)):
            index[_IX_MSTACK + stack], index[_IX_VSTACK + stack] = len(mats), len(vecs)
            vecs += [get(f"{name}.0.ln0.weight"), get(f"{name}.0.ln0.bias")]
            for blk in range(n_blocks):
                p = f"{name}.{blk}."
                decay = exp32(get(p + "att.time_decay"))
                vecs += [
                    get(p + "ln1.weight"), get(p + "ln1.bias"),
                    get(p + "ln2.weight"), get(p + "ln2.bias"),
                    get(p + "att.time_mix_k").reshape(width),
                    get(p + "att.time_mix_v").reshape(width),
                    get(p + "att.time_mix_r").reshape(width),
                    decay,
                    get(p + "att.time_first"),
                    get(p + "ffn.time_mix_k").reshape(width),
                    get(p + "ffn.time_mix_r").reshape(width),
                ]
                mats += [
                    get(p + "att.key.weight"), get(p + "att.value.weight"),
                    get(p + "att.receptance.weight"), get(p + "att.output.weight"),
                    get(p + "ffn.key.weight"), get(p + "ffn.receptance.weight"),
                    get(p + "ffn.value.weight"),
                ]
        mats_arr = np.ascontiguousarray(np.stack(mats), dtype=np.float32)
        vecs_arr = np.ascontiguousarray(np.stack(vecs), dtype=np.float32)
        return cls(config, mats_arr, vecs_arr, index)

    @property
    def width(self) -> int:
        """Feature width F."""
        return self.config.width

    def _args(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.mats, self.vecs, self.index


def _check_cube(xn: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(xn, dtype=np.float32)
    if x.ndim != 3 or min(x.shape) < 1 or x.shape[1] < 2:
        raise ValueError("xn must have shape (I, T, C) with T >= 2")
    return x


def default_threads() -> int:
    """Worker threads used by default: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


class _Scratch:
    """Work buffers of one thread for tiles of ``n_cols`` columns."""

    def __init__(self, weights: KernelWeights, n_cols: int) -> None:
        width = weights.width
        self.buf = _aligned_empty((_NBUF, width, n_cols))
        self.rows = _aligned_empty((_NROWS, n_cols))
        self.band_states = _aligned_empty((weights.config.n_bands, _NSTATE, width, n_cols))


def predict_cube(
    weights: KernelWeights,
    xn: np.ndarray,
    threads: int | None = None,
    chunk_bytes: int = 64 << 20,
) -> np.ndarray:
    """All predictions of a known normalised cube ``(I, T, C)`` -> ``(I, T-1, C)`` float32.

    Entry ``[i, t]`` predicts ``xn[i, t + 1]``, bit-identical to :class:`KernelStepper`. The
    line predictor runs band by band and the spectral predictor line by line, on ``threads``
    threads (default :func:`default_threads`), over chunks of lines whose intermediate features
    take about ``chunk_bytes``. Neither setting changes the result.
    """
    x = _check_cube(xn)
    n_bands, n_lines, n_valid = x.shape
    width, n_cols = weights.width, _padded(n_valid)
    args = weights._args()
    threads = max(1, threads or default_threads())
    pred = np.empty((n_bands, n_lines - 1, n_valid), dtype=np.float32)
    states = _aligned_empty((n_bands, weights.config.n_lines, _NSTATE, width, n_cols))
    per_line = 2 * n_bands * width * n_cols * 4
    chunk = min(n_lines - 1, max(threads, chunk_bytes // per_line // threads * threads))
    xs = _aligned_empty((n_bands, chunk + 1, width, n_cols))
    innov = _aligned_empty((n_bands, chunk, width, n_cols))
    local = threading.local()

    def scratch() -> _Scratch:
        if not hasattr(local, "scratch"):
            local.scratch = _Scratch(weights, n_cols)
        return local.scratch

    def start_band(i: int) -> None:
        work = scratch()
        _init_states(states[i])
        _encode_band(*args, x[i, 0], xs[i, 0], xs[i, 0], innov[i, 0], states[i], work.buf,
                     work.rows, 0)

    def band_job(i: int, t0: int, t1: int) -> None:
        work = scratch()
        if t0 > 0:
            xs[i, 0] = xs[i, chunk]  # features of line t0, encoded by the previous chunk
        _band_job(*args, x[i], t0, xs[i, : t1 - t0 + 1], states[i], innov[i], pred[0], i == 0,
                  i == n_bands - 1, work.buf, work.rows)

    def line_job(t: int, t0: int) -> None:
        work = scratch()
        _line_job(*args, xs, innov, t - t0, pred, t, work.band_states, work.buf, work.rows)

    with ThreadPoolExecutor(max_workers=threads) as pool:

        def run_all(fn, *iterables) -> None:
            for _ in pool.map(fn, *iterables):
                pass

        run_all(start_band, range(n_bands))
        for t0 in range(0, n_lines - 1, chunk):
            t1 = min(t0 + chunk, n_lines - 1)
            run_all(band_job, range(n_bands), [t0] * n_bands, [t1] * n_bands)
            if n_bands > 1:
                run_all(line_job, range(t0, t1), [t0] * (t1 - t0))
    return pred


def _serve(jobs: queue.SimpleQueue, errors: list[BaseException]) -> None:
    """Run queued calls ``(fn, *args)`` in order; set queued events; stop at ``None``."""
    while (job := jobs.get()) is not None:
        if isinstance(job, threading.Event):
            job.set()
            continue
        try:
            job[0](*job[1:])
        except BaseException as error:  # re-raised by the next flush
            errors.append(error)


class _Worker:
    """One background thread running submitted calls in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        threading.Thread(target=_serve, args=(self._jobs, self._errors), daemon=True).start()

    def submit(self, *job) -> None:
        """Queue the call ``job[0](*job[1:])``."""
        self._jobs.put(job)

    def flush(self) -> None:
        """Wait until every submitted call has run; re-raise the first error."""
        done = threading.Event()
        self._jobs.put(done)
        done.wait()
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            raise error

    def __del__(self) -> None:
        self._jobs.put(None)


class KernelStepper:
    """Band-by-band predictions, as a decoder computes them; bit-identical to ``predict_cube``.

    Values are normalised floats of one image with ``C`` columns. Usage::

        stepper = KernelStepper(weights)
        stepper.start(x[:, 0, :])                # line 0 of all bands: (I, C)
        for t in range(1, T):
            stepper.begin_line()
            for i in range(I):
                p = stepper.predict_band(i)      # (C,), needs bands 0..i-1 of line t
                stepper.push_band(i, x[i, t, :])

    ``push_band`` encodes the band's line and advances the spectral predictor (for band
    ``i + 1``) in one compiled call; the line predictor of band ``i`` (for the next line) is
    advanced meanwhile by a second thread (``threaded=True``, the default) or at once, and
    ``begin_line`` waits for it.
    """

    def __init__(self, weights: KernelWeights, threaded: bool = True) -> None:
        self.weights = weights
        self.n_bands = 0
        self.n_valid = 0
        self.next_band = 0
        self.lines_done = 0
        self._open = False
        self._args = weights._args()
        self._worker = _Worker() if threaded else None

    def start(self, first_line: np.ndarray) -> None:
        """Reset and take line 0 of all bands, ``(I, C)``; line 0 is not predicted."""
        line = np.ascontiguousarray(first_line, dtype=np.float32)
        if line.ndim != 2 or min(line.shape) < 1:
            raise ValueError("first_line must have shape (I, C)")
        if self._worker is not None:
            self._worker.flush()
        n_bands, n_valid = line.shape
        width, n_cols = self.weights.width, _padded(n_valid)
        self.n_bands, self.n_valid = n_bands, n_valid
        self._xs = _aligned_empty((n_bands, width, n_cols))
        self._xs_next = _aligned_empty((n_bands, width, n_cols))
        self._line_states = _aligned_empty(
            (n_bands, self.weights.config.n_lines, _NSTATE, width, n_cols)
        )
        self._spec = _aligned_empty((width, n_cols))
        self._main = _Scratch(self.weights, n_cols)
        self._side = _Scratch(self.weights, n_cols)
        self._prev0 = line[0].copy()
        self._new0 = np.empty(n_valid, dtype=np.float32)
        work = self._main
        for i in range(n_bands):
            _init_states(self._line_states[i])
            _encode_band(*self._args, line[i], self._xs_next[i], self._xs[i], self._spec,
                         work.band_states, work.buf, work.rows, 0)
            _stack_step(*self._args, _LINES, self._xs_next[i], self._line_states[i], work.buf,
                        work.rows, n_cols)
        self.lines_done = 1
        self.next_band = 0
        self._open = False

    def begin_line(self) -> None:
        """Open the next line (its line-predictor features were computed while pushing)."""
        if self.lines_done == 0 or self._open:
            raise RuntimeError("begin_line needs start() or a completely pushed line")
        if self._worker is not None:
            self._worker.flush()
        self._xs, self._xs_next = self._xs_next, self._xs
        _init_states(self._main.band_states)
        self.next_band = 0
        self._open = True

    def _check_band(self, band: int) -> None:
        if not self._open:
            raise RuntimeError("call begin_line() first")
        if band != self.next_band:
            raise RuntimeError(f"band {band} requested, band {self.next_band} expected")

    def predict_band(self, band: int, out: np.ndarray | None = None) -> np.ndarray:
        """Prediction ``(C,)`` of ``band`` on the open line; bands before it must be pushed.

        ``out``, if given, is a contiguous float32 array ``(C,)`` that receives it.
        """
        self._check_band(band)
        if out is None:
            out = np.empty(self.n_valid, dtype=np.float32)
        elif out.dtype != np.float32 or out.shape != (self.n_valid,) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous float32 array of shape ({self.n_valid},)")
        _predict(*self._args, band == 0, self._xs[band], self._spec, self._prev0, out,
                 self._main.buf, self._main.rows)
        return out

    def push_band(self, band: int, values: np.ndarray) -> None:
        """Give the true (normalised) values ``(C,)`` of ``band`` on the open line."""
        self._check_band(band)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (self.n_valid,):
            raise ValueError(f"values must have shape ({self.n_valid},)")
        work = self._main
        enc = self._xs_next[band]  # then advanced in place by the line predictor
        _encode_band(*self._args, values, enc, self._xs[band], self._spec, work.band_states,
                     work.buf, work.rows, 2 if band < self.n_bands - 1 else 0)
        step = (_stack_step, *self._args, _LINES, enc, self._line_states[band], self._side.buf,
                self._side.rows, enc.shape[1])
        if self._worker is not None:
            self._worker.submit(*step)
        else:
            step[0](*step[1:])
        if band == 0:
            self._new0[:] = values
        self.next_band += 1
        if self.next_band == self.n_bands:
            self._prev0, self._new0 = self._new0, self._prev0
            self.lines_done += 1
            self._open = False


def predict_stepwise(weights: KernelWeights, xn: np.ndarray, threaded: bool = True) -> np.ndarray:
    """Predictions of a known cube ``(I, T, C)`` through :class:`KernelStepper`."""
    x = _check_cube(xn)
    n_bands, n_lines, n_valid = x.shape
    pred = np.empty((n_bands, n_lines - 1, n_valid), dtype=np.float32)
    stepper = KernelStepper(weights, threaded=threaded)
    stepper.start(x[:, 0])
    for t in range(1, n_lines):
        stepper.begin_line()
        for i in range(n_bands):
            stepper.predict_band(i, pred[i, t - 1])
            stepper.push_band(i, x[i, t])
    return pred
