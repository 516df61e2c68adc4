"""Elementary functions, on float32 scalars and vectors alike (the same operations per lane).

``exp``, ``sigmoid``, ``erf`` and GELU from correctly rounded float32 operations (range
reduction and fixed polynomials), never libm; ``exp32`` and the others apply them to arrays.
"""

from __future__ import annotations

import math

import numpy as np

from hsicomp.models.kernel.layout import _F32, _HALF, _INV_SQRT2, _ONE, _TWO, _ZERO, _jit
from hsicomp.models.kernel.vectors import _VL, _abs, _fma, _ld1, _neg, _pow2, _sel, _st1

# exp(x) = 2^k e^r with k = round(x / ln 2), r = x - k ln 2 (ln 2 split in a 12-bit head, so
# k * head is exact, and a tail); e^r = 1 + r + r^2 P(r) on |r| <= ln(2) / 2, P fitted here
# (weighted minimax, relative error 3e-9 before float32 rounding), evaluated as
# 1 + r (1 + r P(r)) with fma.
_EXP_LO = _F32(-64.0)  # e^x is 0 below this (1.6e-28: no subnormal results)
_EXP_HI = _F32(88.0)  # and saturates at e^88 above it (no infinities)
_LOG2E = _F32(1.0 / math.log(2.0))
_ROUNDER = _F32(1.5 * 2**23)  # (y + R) - R rounds |y| < 2^22 to an integer
_NEG_LN2_HI = _F32(-2839.0 / 4096.0)
_NEG_LN2_LO = _F32(-(math.log(2.0) - 2839.0 / 4096.0))
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


@_jit
def _max(a, b):
    return _sel(a > b, a, b)


@_jit
def _min(a, b):
    return _sel(a < b, a, b)


@_jit
def _exp_le88(x):
    """``e^x`` for ``x <= 88``: 0 below -64, within 1 ulp above."""
    xc = _max(x, _EXP_LO)
    k = _fma(xc, _LOG2E, _ROUNDER) - _ROUNDER
    r = _fma(k, _NEG_LN2_HI, xc)
    r = _fma(k, _NEG_LN2_LO, r)
    p = _fma(_fma(_fma(_fma(_EXP_P4, r, _EXP_P3), r, _EXP_P2), r, _EXP_P1), r, _EXP_P0)
    y = _fma(r, _fma(r, p, _ONE), _ONE)  # 1 + r (1 + r P(r))
    return _sel(x >= _EXP_LO, y * _pow2(k), _ZERO)


@_jit
def _exp(x):
    """``e^x`` in float32: 0 below -64, ``e^88`` above 88, within 1 ulp in between."""
    return _exp_le88(_min(x, _EXP_HI))


@_jit
def _sigmoid_den(x):
    """``1 + e^-x`` with x clamped at -60; ``sigmoid(x) * y`` is computed as ``y / (1 + e^-x)``."""
    return _ONE + _exp_le88(_neg(_max(x, _SIGMOID_LO)))


@_jit
def _erf_odd(x):
    """``erf(x)`` for ``|x| < 1``."""
    s = x * x
    q = _fma(_fma(_fma(_fma(_ERF_Q5, s, _ERF_Q4), s, _ERF_Q3), s, _ERF_Q2), s, _ERF_Q1)
    return x * _fma(q, s, _ERF_Q0)


@_jit
def _erfc_tail(a):
    """``erfc(a)`` for ``a >= 1`` (finite for any ``a >= 0``)."""
    t = _ONE / _fma(_ERFC_P, a, _ONE)
    g = _fma(_fma(_fma(_fma(_ERFC_G4, t, _ERFC_G3), t, _ERFC_G2), t, _ERFC_G1), t, _ERFC_G0)
    return (t * g) * _exp_le88(_neg(a * a))


@_jit
def _erf(x):
    """``erf(x)`` in float32 (absolute error below 2e-7)."""
    # Both parts are computed and one is selected (branch-free).
    y = _ONE - _erfc_tail(_abs(x))
    tail = _sel(x < _ZERO, _neg(y), y)
    return _sel(_abs(x) < _ONE, _erf_odd(x), tail)


@_jit
def _gelu(x):
    """Exact (erf) GELU ``x (1 + erf(x / sqrt 2)) / 2``; below -sqrt 2, ``1 + erf`` is taken as
    ``erfc(-x / sqrt 2)``, without cancellation."""
    h = x * _INV_SQRT2
    a = _abs(h)
    q = _erfc_tail(a)
    tail = _sel(h < _ZERO, q, _TWO - q)
    near = _ONE + _erf_odd(h)
    return (_HALF * x) * _sel(a < _ONE, near, tail)


@_jit
def _map_exp(x, out):
    for n in range(0, x.shape[0], _VL):
        _st1(out, n, _exp(_ld1(x, n)))


@_jit
def _map_sigmoid(x, out):
    for n in range(0, x.shape[0], _VL):
        _st1(out, n, _ONE / _sigmoid_den(_ld1(x, n)))


@_jit
def _map_erf(x, out):
    for n in range(0, x.shape[0], _VL):
        _st1(out, n, _erf(_ld1(x, n)))


@_jit
def _map_gelu(x, out):
    for n in range(0, x.shape[0], _VL):
        _st1(out, n, _gelu(_ld1(x, n)))


def _elementwise(kernel, x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    padded = np.zeros(-(-flat.size // _VL) * _VL, dtype=np.float32)
    padded[: flat.size] = flat
    out = np.empty_like(padded)
    kernel(padded, out)
    return out[: flat.size].reshape(np.shape(x))


def exp32(x: np.ndarray) -> np.ndarray:
    """The kernel's ``e^x`` on a float32 array (0 below -64, saturating at ``e^88``)."""
    return _elementwise(_map_exp, x)


def sigmoid32(x: np.ndarray) -> np.ndarray:
    """The kernel's logistic sigmoid ``1 / (1 + e^-x)`` on a float32 array (x clamped at -60)."""
    return _elementwise(_map_sigmoid, x)


def erf32(x: np.ndarray) -> np.ndarray:
    """The kernel's ``erf`` on a float32 array."""
    return _elementwise(_map_erf, x)


def gelu32(x: np.ndarray) -> np.ndarray:
    """The kernel's exact (erf) GELU on a float32 array."""
    return _elementwise(_map_gelu, x)
