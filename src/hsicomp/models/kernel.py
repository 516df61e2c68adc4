"""Bit-reproducible float32 LineRWKV inference on the CPU (numba).

An encoder and a decoder of a predictive codec must compute the same predictions to the last
bit, on any machine: a misprediction by one ulp near a rounding boundary corrupts everything
decoded after it. This module evaluates trained LineRWKV weights (see ``linerwkv.py`` for the
data flow) in a way that makes that hold:

* only IEEE-754 float32 operations that are correctly rounded by definition: ``+ - * /``,
  ``sqrt``, fused multiply-add ``fma(a, b, c) = a * b + c`` rounded once, comparisons and
  selections. ``fma`` is called explicitly (the LLVM intrinsic ``llvm.fma``: one instruction
  where the CPU has FMA, a correctly rounded library call where not); everything else is
  compiled by numba without fast-math, so the compiler may neither reassociate nor contract
  a separate multiply and add into an FMA;
* every sum (dot products, convolutions, LayerNorm mean and variance) is an explicit chain
  over its terms in index order; no BLAS, ``np.dot`` or ``np.sum``;
* ``exp``, ``sigmoid`` and ``erf`` are computed here from those operations (range reduction and
  fixed polynomials), never by libm, whose results differ between platforms;
* each column of each band or line sequence is computed by the same per-element arithmetic
  whatever the batching, so ``predict_cube`` (all lines of a known cube at once, the encoder
  side) and ``KernelStepper`` (band by band, the decoder side) give identical bits. The code
  works on explicit SIMD vectors of columns (LLVM vector types: 32 lanes where numba targets
  AVX-512, else 8), on tiles of two vectors with matrix products blocked in registers, and on
  any number of threads; none of that changes anything per element.

The arithmetic follows the torch model with these fixed choices (``ARITHMETIC_VERSION`` 2).
A matrix product, convolution or linear layer starts from its bias (or 0) and adds each term
with one ``fma`` (``acc = fma(w, x, acc)``) in input order (taps outer, channels inner); a
residual branch is summed from 0 and then added to ``x``. LayerNorm is
``fma((x - mean) * (1 / sqrt(var + eps)), g, b)``, the mean a plain sum of the features in
order divided by F, the biased variance ``fma(d, d, acc)`` over ``d = x - mean`` in order,
divided by F. A token shift mix is ``fma(x - prev, mix, prev)``. Each WKV sum needs one
exponential, since one of its two weights is ``e^0 = 1``, and is formed as
``fma(e1, a, e2 * v)``; ``sigmoid(r) * y`` is ``y / (1 + e^-r)``, with r clamped at -60;
``exp`` flushes results below ``e^-64`` to 0 (no subnormal numbers anywhere near it); the
polynomials are evaluated by Horner's rule with ``fma``. Predictions differ from the torch
forward about as much as its float32 and float64 results differ from each other (1e-6 to 1e-5
on the normalised scale).

Floating-point state that must be left at its defaults: round to nearest and gradual underflow
(no flush-to-zero / denormals-are-zero), which is how Python, numpy and torch run.
"""

from __future__ import annotations

import math
import operator
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
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.core.imputils import lower_builtin
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import intrinsic, models, register_model

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
#: 1: separate multiply and add; 2: fused multiply-add in sums, mixes and polynomials.
ARITHMETIC_VERSION = 2

#: Compilation options of every kernel function: cached, IEEE division semantics (no zero
#: checks), no fast-math, and the GIL released so that Python threads run jobs in parallel.
#: (LLVM inlines the small helpers into their callers; numba's own inlining only made the
#: compilation several times slower.)
_jit = njit(cache=True, error_model="numpy", nogil=True)

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


# Scratch of a thread: two hidden-layer buffers of the line encoder (F, cols + 2 _VL) and two
# rows (cols + 2 _VL,): the line seen by the encoder, and an output row; tile buffers
# (F, _TILE) of the blocks and the decoder.
_NBUF = 2
_NROWS = 2
_NTILE = 6

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

# Epilogues of a matrix product s = W @ x (see _product).
_SET, _ADD, _RELU2, _GATED = 0, 1, 2, 3


# ---------------------------------------------------------------------------------------------
# Vectors: float32 SIMD values for compiled code. A vector holds _VL consecutive columns of a
# feature row; its arithmetic is the float32 arithmetic of each lane, nothing else.


def _vector_lanes() -> int:
    """Lanes of a kernel vector: 32 (two registers) where numba compiles for AVX-512, else 8.

    Only the speed depends on it: a register tile of 4 rows x 2 vectors is then 16 of the 32
    AVX-512 registers, or 8 of the 16 AVX2 ones. Every lane computes the same operations.
    """
    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    return 32 if "+avx512f" in features.split(",") else 8


_VL = _vector_lanes()
#: Columns of a tile: two vectors, the width of the matrix-product register tile.
_TILE = 2 * _VL
_LL_F32 = ir.FloatType()
_LL_VEC = ir.VectorType(_LL_F32, _VL)


class _Vector(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"float32x{_VL}")


class _Mask(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"mask{_VL}")


_VEC = _Vector()
_MASK = _Mask()


@register_model(_Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, _LL_VEC)


@register_model(_Mask)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type) -> None:
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), _VL))


def _is_real(ty) -> bool:
    return ty == types.float32 or isinstance(ty, _Vector)


def _splat(builder, ty, value):
    """``value`` of numba type ``ty`` (float32 or vector) as an LLVM vector."""
    if isinstance(ty, _Vector):
        return value
    one = builder.insert_element(ir.Constant(_LL_VEC, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(_LL_VEC, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), _VL), [0] * _VL))


def _real_args(builder, sig, args):
    """Arguments as LLVM values of the result's kind: scalars stay scalar when all are."""
    if not any(isinstance(ty, _Vector) for ty in sig.args):
        return list(args)
    return [_splat(builder, ty, v) for ty, v in zip(sig.args, args, strict=True)]


def _result_type(*tys):
    """Vector if any argument is one, float32 if all are float32, None (no match) otherwise."""
    if not all(_is_real(ty) for ty in tys):
        return None
    return _VEC if any(isinstance(ty, _Vector) for ty in tys) else types.float32


# Operators + - * / and comparisons on vectors (with float32 scalars broadcast): IEEE float32
# instructions without fast-math flags, so LLVM neither contracts nor reassociates them.
_BINARY = {operator.add: "fadd", operator.sub: "fsub", operator.mul: "fmul",
           operator.truediv: "fdiv"}
_COMPARE = {operator.lt: "<", operator.le: "<=", operator.gt: ">", operator.ge: ">="}


def _vector_operands(args) -> bool:
    return (len(args) == 2 and any(isinstance(a, _Vector) for a in args)
            and all(_is_real(a) for a in args))


def _register_operators() -> None:
    for op, instr in _BINARY.items():

        class _BinaryTemplate(AbstractTemplate):
            def generic(self, args, kws):
                if not kws and _vector_operands(args):
                    return signature(_VEC, *args)
                return None

        infer_global(op)(_BinaryTemplate)

        def lower_binary(context, builder, sig, args, instr=instr):
            a, b = _real_args(builder, sig, args)
            return getattr(builder, instr)(a, b)

        for tys in ((_VEC, _VEC), (_VEC, types.float32), (types.float32, _VEC)):
            lower_builtin(op, *tys)(lower_binary)

    for op, cmp in _COMPARE.items():

        class _CompareTemplate(AbstractTemplate):
            def generic(self, args, kws):
                if not kws and _vector_operands(args):
                    return signature(_MASK, *args)
                return None

        infer_global(op)(_CompareTemplate)

        def lower_compare(context, builder, sig, args, cmp=cmp):
            a, b = _real_args(builder, sig, args)
            return builder.fcmp_ordered(cmp, a, b)

        for tys in ((_VEC, _VEC), (_VEC, types.float32), (types.float32, _VEC)):
            lower_builtin(op, *tys)(lower_compare)


_register_operators()


def _call_intrinsic(builder, name: str, ty, args):
    """Call the LLVM intrinsic ``llvm.<name>`` on float32 scalars or vectors ``ty``."""
    suffix = f"v{_VL}f32" if isinstance(ty, ir.VectorType) else "f32"
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * len(args)),
                                        f"llvm.{name}.{suffix}")
    return builder.call(fn, args)


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (IEEE fusedMultiplyAdd), on scalars or vectors.

    ``llvm.fma`` is exact by definition: a fused instruction where the CPU has one, a correctly
    rounded library call where not. (Contraction of ``a * b + c`` written as two operations is
    never allowed, so those stay two roundings.)
    """
    res = _result_type(a, b, c)
    if res is None:
        return None

    def codegen(context, builder, sig, args):
        vals = _real_args(builder, sig, args)
        return _call_intrinsic(builder, "fma", vals[0].type, vals)

    return res(a, b, c), codegen


@intrinsic
def _sqrt(typingctx, a):
    """Correctly rounded square root."""
    res = _result_type(a)
    if res is None:
        return None

    def codegen(context, builder, sig, args):
        return _call_intrinsic(builder, "sqrt", args[0].type, list(args))

    return res(a), codegen


@intrinsic
def _abs(typingctx, a):
    """``|a|`` (the sign bit cleared)."""
    res = _result_type(a)
    if res is None:
        return None

    def codegen(context, builder, sig, args):
        return _call_intrinsic(builder, "fabs", args[0].type, list(args))

    return res(a), codegen


@intrinsic
def _neg(typingctx, a):
    """``-a`` (the sign bit flipped)."""
    res = _result_type(a)
    if res is None:
        return None

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])

    return res(a), codegen


@intrinsic
def _sel(typingctx, cond, a, b):
    """``a`` where ``cond`` holds, else ``b`` (lane by lane for a vector mask)."""
    res = _result_type(a, b)
    if res is None or not (cond == types.boolean or isinstance(cond, _Mask)):
        return None
    if isinstance(cond, _Mask) != (res == _VEC):
        return None

    def codegen(context, builder, sig, args):
        a_val, b_val = _real_args(builder, sig.replace(args=sig.args[1:]), args[1:])
        return builder.select(args[0], a_val, b_val)

    return res(cond, a, b), codegen


@intrinsic
def _pow2(typingctx, k):
    """``2**k`` for an integer-valued float32 ``k`` in [-126, 127], from its exponent bits."""
    if not _is_real(k):
        return None

    def codegen(context, builder, sig, args):
        val = args[0]
        if isinstance(val.type, ir.VectorType):
            i32 = ir.VectorType(ir.IntType(32), _VL)
            c127 = ir.Constant(i32, [127] * _VL)
            c23 = ir.Constant(i32, [23] * _VL)
        else:
            i32 = ir.IntType(32)
            c127, c23 = ir.Constant(i32, 127), ir.Constant(i32, 23)
        n = builder.fptosi(val, i32)
        bits = builder.shl(builder.add(n, c127), c23)
        return builder.bitcast(bits, val.type)

    return k(k), codegen


@intrinsic
def _vec(typingctx, x):
    """A vector with every lane ``x`` (float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, types.float32, args[0])

    return _VEC(x), codegen


def _element_pointer(context, builder, aryty, ary, indices):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer2(
        context, builder, arr.data, cgutils.unpack_tuple(builder, arr.shape),
        cgutils.unpack_tuple(builder, arr.strides), aryty.layout, indices,
        wraparound=False, boundscheck=False,
    )


def _is_row_array(ary, ndim: int) -> bool:
    return (isinstance(ary, types.Array) and ary.dtype == types.float32 and ary.ndim == ndim
            and ary.layout == "C")


@intrinsic
def _ld(typingctx, ary, i, j):
    """The vector ``ary[i, j : j + _VL]`` of a C-contiguous float32 array (F, columns)."""
    if not _is_row_array(ary, 2):
        return None

    def codegen(context, builder, sig, args):
        idx = [context.cast(builder, v, t, types.intp)
               for v, t in zip(args[1:], sig.args[1:], strict=True)]
        ptr = _element_pointer(context, builder, sig.args[0], args[0], idx)
        return builder.load(builder.bitcast(ptr, _LL_VEC.as_pointer()), align=4)

    return _VEC(ary, i, j), codegen


@intrinsic
def _st(typingctx, ary, i, j, v):
    """``ary[i, j : j + _VL] = v``."""
    if not _is_row_array(ary, 2) or not isinstance(v, _Vector):
        return None

    def codegen(context, builder, sig, args):
        idx = [context.cast(builder, x, t, types.intp)
               for x, t in zip(args[1:3], sig.args[1:3], strict=True)]
        ptr = _element_pointer(context, builder, sig.args[0], args[0], idx)
        builder.store(args[3], builder.bitcast(ptr, _LL_VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(ary, i, j, v), codegen


@intrinsic
def _ld1(typingctx, ary, j):
    """The vector ``ary[j : j + _VL]`` of a contiguous float32 row."""
    if not _is_row_array(ary, 1):
        return None

    def codegen(context, builder, sig, args):
        idx = [context.cast(builder, args[1], sig.args[1], types.intp)]
        ptr = _element_pointer(context, builder, sig.args[0], args[0], idx)
        return builder.load(builder.bitcast(ptr, _LL_VEC.as_pointer()), align=4)

    return _VEC(ary, j), codegen


@intrinsic
def _st1(typingctx, ary, j, v):
    """``ary[j : j + _VL] = v``."""
    if not _is_row_array(ary, 1) or not isinstance(v, _Vector):
        return None

    def codegen(context, builder, sig, args):
        idx = [context.cast(builder, args[1], sig.args[1], types.intp)]
        ptr = _element_pointer(context, builder, sig.args[0], args[0], idx)
        builder.store(args[2], builder.bitcast(ptr, _LL_VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(ary, j, v), codegen



# ---------------------------------------------------------------------------------------------
# Elementary functions, on float32 scalars and vectors alike (the same operations per lane)


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


#: Column padding: feature rows hold whole tiles (and stay 64-byte aligned).
_ALIGN = _TILE


# ---------------------------------------------------------------------------------------------
# Layers on feature arrays (F, columns), columns padded to a multiple of _ALIGN. A tile is
# _TILE consecutive columns (two vectors); every column is computed on its own, so neither the
# tiling nor the number of columns changes any result.


@_jit
def _ln_stats(x, c):
    """LayerNorm statistics of the tile at column ``c`` of ``x``, (mean, 1 / std) of its first
    and of its second vector. (The two sums run side by side, each in order of the features.)"""
    width = x.shape[0]
    fw = _F32(width)
    s0 = _ld(x, 0, c)
    s1 = _ld(x, 0, c + _VL)
    for f in range(1, width):
        s0 = s0 + _ld(x, f, c)
        s1 = s1 + _ld(x, f, c + _VL)
    mean0 = s0 / fw
    mean1 = s1 / fw
    d0 = _ld(x, 0, c) - mean0
    d1 = _ld(x, 0, c + _VL) - mean1
    q0 = d0 * d0
    q1 = d1 * d1
    for f in range(1, width):
        d0 = _ld(x, f, c) - mean0
        d1 = _ld(x, f, c + _VL) - mean1
        q0 = _fma(d0, d0, q0)
        q1 = _fma(d1, d1, q1)
    return (mean0, _ONE / _sqrt(q0 / fw + _LN_EPS), mean1, _ONE / _sqrt(q1 / fw + _LN_EPS))


@_jit
def _norm_tile(x, g, b, c, gelu):
    """LayerNorm (then GELU if ``gelu``) in place on the tile at column ``c``."""
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for f in range(x.shape[0]):
        y0 = _fma((_ld(x, f, c) - mean0) * scale0, g[f], b[f])
        y1 = _fma((_ld(x, f, c + _VL) - mean1) * scale1, g[f], b[f])
        if gelu:
            y0 = _gelu(y0)
            y1 = _gelu(y1)
        _st(x, f, c, y0)
        _st(x, f, c + _VL, y1)


@_jit
def _dot(w, j, x, c, a0, a1, a2, a3, b0, b1, b2, b3):
    """Register tile: ``a_i += w[j + i] @ x[:, c : c + _VL]`` and ``b_i`` the same on the next
    vector, one ``fma`` per term, in order of the input index."""
    for k in range(w.shape[1]):
        x0 = _ld(x, k, c)
        x1 = _ld(x, k, c + _VL)
        w0, w1, w2, w3 = w[j, k], w[j + 1, k], w[j + 2, k], w[j + 3, k]
        a0 = _fma(w0, x0, a0)
        b0 = _fma(w0, x1, b0)
        a1 = _fma(w1, x0, a1)
        b1 = _fma(w1, x1, b1)
        a2 = _fma(w2, x0, a2)
        b2 = _fma(w2, x1, b2)
        a3 = _fma(w3, x0, a3)
        b3 = _fma(w3, x1, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


@_jit
def _put(dst, f, c, s, mode, gate, gc):
    """Epilogue of a product: row f of the vector at column c of ``dst`` from the sum ``s``."""
    if mode == _SET:
        _st(dst, f, c, s)
    elif mode == _ADD:
        _st(dst, f, c, _ld(dst, f, c) + s)
    elif mode == _RELU2:
        r = _max(s, _ZERO)
        _st(dst, f, c, r * r)
    else:
        _st(dst, f, c, _ld(dst, f, c) + s / _sigmoid_den(_ld(gate, f, gc)))


@_jit
def _product(w, x, dst, dc, mode, gate):
    """``s = w @ x`` on a tile ``x`` (F, _TILE), each sum from 0, into the tile at column
    ``dc`` of ``dst``: ``_SET`` s, ``_ADD`` dst + s, ``_RELU2`` max(s, 0)^2, ``_GATED``
    dst + s / (1 + e^-gate) (``gate`` a tile like ``x``)."""
    z = _vec(_ZERO)
    for j in range(0, w.shape[0], 4):
        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(w, j, x, 0, z, z, z, z, z, z, z, z)
        _put(dst, j, dc, a0, mode, gate, 0)
        _put(dst, j + 1, dc, a1, mode, gate, 0)
        _put(dst, j + 2, dc, a2, mode, gate, 0)
        _put(dst, j + 3, dc, a3, mode, gate, 0)
        _put(dst, j, dc + _VL, b0, mode, gate, _VL)
        _put(dst, j + 1, dc + _VL, b1, mode, gate, _VL)
        _put(dst, j + 2, dc + _VL, b2, mode, gate, _VL)
        _put(dst, j + 3, dc + _VL, b3, mode, gate, _VL)


@_jit
def _affine(w, bias, x, dst):
    """``dst = bias + w @ x`` on tiles (F, _TILE)."""
    for j in range(0, w.shape[0], 4):
        a0, a1, a2, a3 = _vec(bias[j]), _vec(bias[j + 1]), _vec(bias[j + 2]), _vec(bias[j + 3])
        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(w, j, x, 0, a0, a1, a2, a3, a0, a1, a2, a3)
        _st(dst, j, 0, a0)
        _st(dst, j + 1, 0, a1)
        _st(dst, j + 2, 0, a2)
        _st(dst, j + 3, 0, a3)
        _st(dst, j, _VL, b0)
        _st(dst, j + 1, _VL, b1)
        _st(dst, j + 2, _VL, b2)
        _st(dst, j + 3, _VL, b3)


@_jit
def _block_tile(mats, vecs, m0, v0, x, c, st, tiles):
    """One RWKV-4 block on one token per column, on the tile at column ``c`` of ``x`` (F, cols),
    in place; ``st`` the state of the tile (_NSTATE, F, _TILE); ``tiles`` scratch (_NTILE, F,
    _TILE)."""
    width = x.shape[0]
    mk, mv, mr, kt, vt, rt = tiles[0], tiles[1], tiles[2], tiles[3], tiles[4], tiles[5]
    # TimeMix on ln1(x), mixed with the previous token's ln1 output.
    ln_g, ln_b = vecs[v0 + _LN1_G], vecs[v0 + _LN1_B]
    mix_k, mix_v, mix_r = vecs[v0 + _MIX_K], vecs[v0 + _MIX_V], vecs[v0 + _MIX_R]
    att_xx = st[_ATT_XX]
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for h in range(0, _TILE, _VL):
        mean = mean0 if h == 0 else mean1
        scale = scale0 if h == 0 else scale1
        for f in range(width):
            xa = _fma((_ld(x, f, c + h) - mean) * scale, ln_g[f], ln_b[f])
            prev = _ld(att_xx, f, h)
            d = xa - prev
            _st(mk, f, h, _fma(d, mix_k[f], prev))
            _st(mv, f, h, _fma(d, mix_v[f], prev))
            _st(mr, f, h, _fma(d, mix_r[f], prev))
            _st(att_xx, f, h, xa)
    _product(mats[m0 + _ATT_K], mk, kt, 0, _SET, kt)
    _product(mats[m0 + _ATT_V], mv, vt, 0, _SET, vt)
    _product(mats[m0 + _ATT_R], mr, rt, 0, _SET, rt)
    # WKV with the log-sum-exp state (aa, bb, pp); y = sigmoid(r) * wkv goes to mk.
    decay, first = vecs[v0 + _DECAY], vecs[v0 + _FIRST]
    aa, bb, pp = st[_AA], st[_BB], st[_PP]
    for h in range(0, _TILE, _VL):
        for f in range(width):
            kk = _ld(kt, f, h)
            vv = _ld(vt, f, h)
            a = _ld(aa, f, h)
            b = _ld(bb, f, h)
            p = _ld(pp, f, h)
            ww = first[f] + kk
            e = _exp_le88(_neg(_abs(p - ww)))
            m = p >= ww
            e1 = _sel(m, _ONE, e)
            e2 = _sel(m, e, _ONE)
            # sigmoid(r) * wkv with one division
            y = _fma(e1, a, e2 * vv) / (_fma(e1, b, e2) * _sigmoid_den(_ld(rt, f, h)))
            _st(mk, f, h, y)
            ww = p - decay[f]
            e = _exp_le88(_neg(_abs(ww - kk)))
            m = ww >= kk
            e1 = _sel(m, _ONE, e)
            e2 = _sel(m, e, _ONE)
            _st(aa, f, h, _fma(e1, a, e2 * vv))
            _st(bb, f, h, _fma(e1, b, e2))
            _st(pp, f, h, _sel(m, ww, kk))
    _product(mats[m0 + _ATT_O], mk, x, c, _ADD, x)
    # ChannelMix on ln2(x): sigmoid(r) * value(relu(key)^2).
    ln_g, ln_b = vecs[v0 + _LN2_G], vecs[v0 + _LN2_B]
    mix_k, mix_r = vecs[v0 + _FMIX_K], vecs[v0 + _FMIX_R]
    ffn_xx = st[_FFN_XX]
    mean0, scale0, mean1, scale1 = _ln_stats(x, c)
    for h in range(0, _TILE, _VL):
        mean = mean0 if h == 0 else mean1
        scale = scale0 if h == 0 else scale1
        for f in range(width):
            xa = _fma((_ld(x, f, c + h) - mean) * scale, ln_g[f], ln_b[f])
            prev = _ld(ffn_xx, f, h)
            d = xa - prev
            _st(mk, f, h, _fma(d, mix_k[f], prev))
            _st(mr, f, h, _fma(d, mix_r[f], prev))
            _st(ffn_xx, f, h, xa)
    _product(mats[m0 + _FFN_R], mr, rt, 0, _SET, rt)
    _product(mats[m0 + _FFN_K], mk, kt, 0, _RELU2, kt)
    _product(mats[m0 + _FFN_V], kt, x, c, _GATED, rt)


@_jit
def _stack_step(mats, vecs, ix, stack, x, states, tiles):
    """Advance a stack of blocks by one token per column; ``x`` (F, cols) becomes its output.

    ``states`` is ``(n_blocks, cols / _TILE, _NSTATE, F, _TILE)`` (tile-major, so that the
    state of a tile is contiguous). Tile by tile, all blocks.
    """
    vb = ix[_IX_VSTACK + stack]
    mb = ix[_IX_MSTACK + stack]
    n_blocks = ix[_IX_NBLOCKS + stack]
    for c in range(0, x.shape[1], _TILE):
        _norm_tile(x, vecs[vb], vecs[vb + 1], c, False)  # ln0 of the first block
        for blk in range(n_blocks):
            _block_tile(mats, vecs, mb + _NMAT_BLOCK * blk, vb + 2 + _NVEC_BLOCK * blk, x, c,
                        states[blk, c // _TILE], tiles)


@_jit
def _init_states(states):
    """The empty recurrent state: zeros, and ``pp`` at the initial running maximum."""
    states[:] = _ZERO
    for blk in range(states.shape[0]):
        for tile in range(states.shape[1]):
            states[blk, tile, _PP] = _PP_INIT


@_jit
def _encode_line(mats, vecs, ix, line, out, buf, rows):
    """Line encoder: values ``line`` (n_valid,) -> features ``out`` (F, cols).

    Convolutions see zeros outside columns ``0 .. n_valid - 1``: the line and the hidden
    layers are kept in rows with _VL zero columns on either side (``rows[0]``, ``buf``), whose
    columns from n_valid on are zeroed too, and the taps are vectors read one column to the
    left and to the right. The columns of ``out`` from n_valid on are computed from zeros,
    like any other column, and never used.
    """
    width, n_cols = out.shape
    n_valid = line.shape[0]
    n_enc = ix[_IX_NENC]
    ve = ix[_IX_VENC]
    me = ix[_IX_MENC]
    row = rows[0]
    for n in range(n_valid):
        row[_VL + n] = line[n]
    for n in range(n_valid, n_cols):
        row[_VL + n] = _ZERO
    w0, w1, w2 = vecs[ve], vecs[ve + 1], vecs[ve + 2]
    for layer in range(n_enc):
        base = ve + 3 + 3 * layer  # convolution bias, LayerNorm weight and bias
        bias, ln_g, ln_b = vecs[base], vecs[base + 1], vecs[base + 2]
        last = layer == n_enc - 1
        h = out if last else buf[layer % 2]
        o = 0 if last else _VL  # the column of h where column 0 is
        if layer == 0:
            for c in range(0, n_cols, _TILE):
                for hh in range(0, _TILE, _VL):
                    lv = _ld1(row, _VL - 1 + c + hh)
                    mv = _ld1(row, _VL + c + hh)
                    rv = _ld1(row, _VL + 1 + c + hh)
                    for j in range(width):
                        acc = _fma(w2[j], rv, _fma(w1[j], mv, _fma(w0[j], lv, _vec(bias[j]))))
                        _st(h, j, o + c + hh, acc)
                _norm_tile(h, ln_g, ln_b, o + c, True)
        else:
            prev = buf[(layer - 1) % 2]
            m0 = me + 3 * (layer - 1)
            for c in range(0, n_cols, _TILE):
                for j in range(0, width, 4):
                    a0, a1 = _vec(bias[j]), _vec(bias[j + 1])
                    a2, a3 = _vec(bias[j + 2]), _vec(bias[j + 3])
                    b0, b1, b2, b3 = a0, a1, a2, a3
                    for tap in range(3):
                        a0, a1, a2, a3, b0, b1, b2, b3 = _dot(mats[m0 + tap], j, prev,
                                                              _VL - 1 + tap + c,
                                                              a0, a1, a2, a3, b0, b1, b2, b3)
                    _st(h, j, o + c, a0)
                    _st(h, j + 1, o + c, a1)
                    _st(h, j + 2, o + c, a2)
                    _st(h, j + 3, o + c, a3)
                    _st(h, j, o + c + _VL, b0)
                    _st(h, j + 1, o + c + _VL, b1)
                    _st(h, j + 2, o + c + _VL, b2)
                    _st(h, j + 3, o + c + _VL, b3)
                _norm_tile(h, ln_g, ln_b, o + c, True)
        if not last:
            for f in range(width):
                for n in range(n_valid, n_cols):
                    h[f, _VL + n] = _ZERO  # zero padding for the next convolution


@_jit
def _decode(mats, vecs, ix, xs_band, spec, out, rows, tiles):
    """Per-column decoder of the features ``xs_band + spec`` (F, cols) into ``out`` (its length:
    the columns kept)."""
    width, n_cols = xs_band.shape
    vd = ix[_IX_VDEC]
    md = ix[_IX_MDEC]
    n_hidden = ix[_IX_NDEC] - 1
    last = vd + 3 * n_hidden
    w = vecs[last]
    b = vecs[last + 1][0]
    row = rows[1]
    for c in range(0, n_cols, _TILE):
        h = tiles[0]
        for hh in range(0, _TILE, _VL):
            for f in range(width):
                _st(h, f, hh, _ld(xs_band, f, c + hh) + _ld(spec, f, c + hh))
        for layer in range(n_hidden):
            dst = tiles[1 + layer % 2]
            _affine(mats[md + layer], vecs[vd + 3 * layer], h, dst)
            _norm_tile(dst, vecs[vd + 3 * layer + 1], vecs[vd + 3 * layer + 2], 0, True)
            h = dst
        for hh in range(0, _TILE, _VL):
            acc = _vec(b)
            for k in range(width):
                acc = _fma(w[k], _ld(h, k, hh), acc)
            _st1(row, c + hh, acc)
    for n in range(out.shape[0]):
        out[n] = row[n]


@_jit
def _decode_band0(vecs, ix, xs0, prev, out, rows):
    """Band 0: the previous line ``prev`` plus a 1x1 projection of the line-predictor output."""
    last = ix[_IX_VDEC] + 3 * (ix[_IX_NDEC] - 1)
    w = vecs[last + 2]
    b = vecs[last + 3][0]
    row = rows[1]
    for c in range(0, xs0.shape[1], _VL):
        acc = _vec(b)
        for k in range(xs0.shape[0]):
            acc = _fma(w[k], _ld(xs0, k, c), acc)
        _st1(row, c, acc)
    for n in range(out.shape[0]):
        out[n] = row[n] + prev[n]


@_jit
def _spectral_input(enc, xs, spec):
    """Innovation ``enc - xs`` of a band, the spectral predictor's input."""
    for f in range(enc.shape[0]):
        for c in range(0, enc.shape[1], _VL):
            _st(spec, f, c, _ld(enc, f, c) - _ld(xs, f, c))


# ---------------------------------------------------------------------------------------------
# Compiled entry points (they release the GIL; Python threads run independent ones in parallel).
# Decoder and encoder paths call the same functions on the same per-column data. Constants
# passed to compiled functions are wrapped (``np.int64(_LINES)``) so that numba compiles one
# version for all values rather than one per literal.


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


def _state_array(n_blocks: int, width: int, n_cols: int, *batch: int) -> np.ndarray:
    """Recurrent states of a stack, ``(*batch, n_blocks, n_cols / _TILE, _NSTATE, F, _TILE)``."""
    return _aligned_empty((*batch, n_blocks, n_cols // _TILE, _NSTATE, width, _TILE))


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
    """Work buffers of one thread for feature arrays of ``n_cols`` columns."""

    def __init__(self, weights: KernelWeights, n_cols: int) -> None:
        width = weights.width
        self.buf = _aligned_empty((_NBUF, width, n_cols + 2 * _VL))
        self.buf[:] = 0.0  # the margins stay zero
        self.rows = _aligned_empty((_NROWS, n_cols + 2 * _VL))
        self.rows[:] = 0.0
        self.tiles = _aligned_empty((_NTILE, width, _TILE))
        self.band_states = _state_array(weights.config.n_bands, width, n_cols)


def predict_cube(
    weights: KernelWeights,
    xn: np.ndarray,
    threads: int | None = None,
    chunk_bytes: int = 128 << 20,
) -> np.ndarray:
    """All predictions of a known normalised cube ``(I, T, C)`` -> ``(I, T-1, C)`` float32.

    Entry ``[i, t]`` predicts ``xn[i, t + 1]``, bit-identical to :class:`KernelStepper`. The
    line predictor runs band by band and the spectral predictor line by line, on ``threads``
    threads (default :func:`default_threads`), over chunks of lines whose intermediate features
    take about ``chunk_bytes`` (two chunks at a time: the spectral predictor on one while the
    line predictor computes the next). Neither setting changes the result.
    """
    x = _check_cube(xn)
    n_bands, n_lines, n_valid = x.shape
    width, n_cols = weights.width, _padded(n_valid)
    args = weights._args()
    threads = max(1, threads or default_threads())
    pred = np.empty((n_bands, n_lines - 1, n_valid), dtype=np.float32)
    states = _state_array(weights.config.n_lines, width, n_cols, n_bands)
    per_line = 2 * n_bands * width * n_cols * 4
    chunk = min(n_lines - 1, max(threads, chunk_bytes // (2 * per_line) // threads * threads))
    # Features and innovations of a chunk: (band, chunk line, F, cols), two sets in turn.
    buffers = [(_aligned_empty((n_bands, chunk + 1, width, n_cols)),
                _aligned_empty((n_bands, chunk, width, n_cols))) for _ in range(2)]
    chunks = [(t0, min(t0 + chunk, n_lines - 1)) for t0 in range(0, n_lines - 1, chunk)]
    local = threading.local()

    def scratch() -> _Scratch:
        if not hasattr(local, "scratch"):
            local.scratch = _Scratch(weights, n_cols)
        return local.scratch

    def start_band(i: int) -> None:
        work = scratch()
        xs, innov = buffers[0]
        _init_states(states[i])
        _encode_band(*args, x[i, 0], xs[i, 0], xs[i, 0], innov[i, 0], states[i], work.buf,
                     work.rows, work.tiles, 0)

    def band_job(k: int, i: int) -> None:
        work = scratch()
        t0, t1 = chunks[k]
        xs, innov = buffers[k % 2]
        if k > 0:  # features of line t0, encoded by the previous (whole) chunk
            xs[i, 0] = buffers[(k - 1) % 2][0][i, chunk]
        _band_job(*args, x[i], t0, xs[i, : t1 - t0 + 1], states[i], innov[i], pred[0], i == 0,
                  i == n_bands - 1, work.buf, work.rows, work.tiles)

    def line_job(k: int, t: int) -> None:
        work = scratch()
        xs, innov = buffers[k % 2]
        _line_job(*args, xs, innov, t - chunks[k][0], pred, t, work.band_states, work.rows,
                  work.tiles)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(start_band, i) for i in range(n_bands)]:
            future.result()
        # Step k: the spectral predictor on chunk k - 1 (longer jobs first) and the line
        # predictor on chunk k, which only needs the line predictor's states and features.
        for k in range(len(chunks) + 1):
            jobs = []
            if k > 0 and n_bands > 1:
                jobs += [pool.submit(line_job, k - 1, t) for t in range(*chunks[k - 1])]
            if k < len(chunks):
                jobs += [pool.submit(band_job, k, i) for i in range(n_bands)]
            for future in jobs:
                future.result()
    return pred


def _serve(jobs: queue.SimpleQueue, errors: list[BaseException], done: list[int]) -> None:
    """Run queued calls ``(fn, *args)`` in order, counting them in ``done[0]``; set queued
    events; stop at ``None``."""
    while (job := jobs.get()) is not None:
        if isinstance(job, threading.Event):
            job.set()
            continue
        try:
            job[0](*job[1:])
        except BaseException as error:  # re-raised by the next flush
            errors.append(error)
        done[0] += 1


class _Worker:
    """One background thread running submitted calls in order."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        self._submitted = 0
        self._done = [0]
        threading.Thread(target=_serve, args=(self._jobs, self._errors, self._done),
                         daemon=True).start()

    @property
    def idle(self) -> bool:
        """Whether every submitted call has run (a call submitted by another thread aside)."""
        return self._done[0] == self._submitted

    def submit(self, *job) -> None:
        """Queue the call ``job[0](*job[1:])``."""
        self._submitted += 1
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

    ``push_band`` encodes the band's line, advances the spectral predictor and computes the
    prediction of band ``i + 1`` in one compiled call (``predict_band`` then only copies it).
    The line predictor (for the next line) is advanced on the encoded lines meanwhile by a
    second thread (``threaded=True``, the default), which takes every band pushed since its
    last job whenever it is idle, or at once; ``begin_line`` waits for it.
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
        self._line_states = _state_array(self.weights.config.n_lines, width, n_cols, n_bands)
        self._spec = _aligned_empty((width, n_cols))
        self._main = _Scratch(self.weights, n_cols)
        self._side = _Scratch(self.weights, n_cols)
        self._pred = np.empty(n_valid, dtype=np.float32)  # the next band's prediction
        self._prev0 = line[0].copy()
        self._new0 = np.empty(n_valid, dtype=np.float32)
        self._sent = 0  # bands before it are (being) advanced by the line predictor
        work = self._main
        for i in range(n_bands):
            _init_states(self._line_states[i])
            _encode_band(*self._args, line[i], self._xs_next[i], self._xs[i], self._spec,
                         work.band_states, work.buf, work.rows, work.tiles, 0)
            self._line_steps(i + 1)
        self.lines_done = 1
        self.next_band = 0
        self._open = False

    def _line_steps(self, stop: int) -> None:
        """Advance the line predictor of the bands pushed up to ``stop`` on their encoded lines
        (in ``_xs_next``, in place): at once when unthreaded, else as one job of the worker if
        it is idle or ``stop`` is the last band (otherwise at a later push)."""
        if self._worker is not None and not (stop == self.n_bands or self._worker.idle):
            return
        job = (_line_steps, *self._args, self._xs_next, self._line_states, self._sent, stop,
               self._side.tiles)
        self._sent = stop
        if self._worker is not None:
            self._worker.submit(*job)
        else:
            job[0](*job[1:])

    def begin_line(self) -> None:
        """Open the next line (its line-predictor features were computed while pushing)."""
        if self.lines_done == 0 or self._open:
            raise RuntimeError("begin_line needs start() or a completely pushed line")
        if self._worker is not None:
            self._worker.flush()
        self._sent = 0
        self._xs, self._xs_next = self._xs_next, self._xs
        _init_states(self._main.band_states)
        _predict_band0(self._args[1], self._args[2], self._xs[0], self._prev0, self._pred,
                       self._main.rows)
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
            return self._pred.copy()
        if out.dtype != np.float32 or out.shape != (self.n_valid,) or not out.flags.c_contiguous:
            raise ValueError(f"out must be a contiguous float32 array of shape ({self.n_valid},)")
        out[:] = self._pred
        return out

    def push_band(self, band: int, values: np.ndarray) -> None:
        """Give the true (normalised) values ``(C,)`` of ``band`` on the open line."""
        self._check_band(band)
        values = np.ascontiguousarray(values, dtype=np.float32)
        if values.shape != (self.n_valid,):
            raise ValueError(f"values must have shape ({self.n_valid},)")
        work = self._main
        _push(*self._args, values, self._xs_next[band], self._xs, band, self._spec,
              work.band_states, self._pred, work.buf, work.rows, work.tiles)
        self._line_steps(band + 1)
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
