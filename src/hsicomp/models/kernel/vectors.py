"""Vectors: float32 SIMD values for compiled code, as numba types and intrinsics.

A vector holds ``_VL`` consecutive columns of a feature row; its arithmetic is the float32
arithmetic of each lane, nothing else.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.core.imputils import lower_builtin
from numba.core.typing.templates import AbstractTemplate, infer_global, signature
from numba.extending import intrinsic, models, register_model


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
