"""Bit-reproducible float32 LineRWKV inference on the CPU (numba).

An encoder and a decoder of a predictive codec must compute the same predictions to the last
bit, on any machine: a misprediction by one ulp near a rounding boundary corrupts everything
decoded after it. This package evaluates trained LineRWKV weights (see ``linerwkv.py`` for the
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

The package is split by level: ``layout`` (arithmetic version, compilation options, array
layouts), ``vectors`` (the SIMD vector type and its operations, as numba intrinsics),
``functions`` (exp, sigmoid, erf, GELU), ``layers`` (LayerNorm, matrix products, RWKV blocks,
the line encoder and the decoder on feature arrays), ``entry`` (the compiled functions Python
calls) and ``api`` (weights, ``predict_cube``, ``KernelStepper``).

numba's on-disk cache of a compiled function only watches the file that defines it, while
the functions here compile in code from the other files of the package (and the constant
``PP_INIT`` from ``rwkv.py``). So every function is compiled with
:func:`hsicomp.numba_cache.cached_njit` over all those files: editing any of them recompiles
them all.
"""

from hsicomp.models.kernel.api import (
    KernelStepper,
    KernelWeights,
    default_threads,
    predict_cube,
    predict_stepwise,
)
from hsicomp.models.kernel.functions import erf32, exp32, gelu32, sigmoid32
from hsicomp.models.kernel.layout import ARITHMETIC_VERSION

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
