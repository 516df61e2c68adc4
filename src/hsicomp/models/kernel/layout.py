"""Arithmetic version, compilation options, scalar constants and array layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hsicomp.models import rwkv
from hsicomp.numba_cache import cached_njit

#: Identifies the arithmetic of this package: raised whenever a change could alter any bit of
#: any prediction (the golden-hash tests fail first). Codecs store it in their files, so a
#: decoder with other arithmetic refuses a file instead of decoding it wrongly.
#: 1: separate multiply and add; 2: fused multiply-add in sums, mixes and polynomials.
ARITHMETIC_VERSION = 2

#: Files whose code or constants the compiled functions use: the package's own and
#: ``rwkv.py`` (``PP_INIT``). numba's cache of a function only checks the file defining it,
#: so every kernel function is cached under the digest of all of them instead.
_SOURCES = (*sorted(Path(__file__).parent.glob("*.py")), Path(rwkv.__file__))

#: Compilation options of every kernel function: cached, IEEE division semantics (no zero
#: checks), no fast-math, and the GIL released so that Python threads run jobs in parallel.
#: (LLVM inlines the small helpers into their callers; numba's own inlining only made the
#: compilation several times slower.)
_jit = cached_njit(_SOURCES, error_model="numpy", nogil=True)

_F32 = np.float32
_ZERO = _F32(0.0)
_ONE = _F32(1.0)
_TWO = _F32(2.0)
_HALF = _F32(0.5)
_LN_EPS = _F32(1e-5)
_PP_INIT = _F32(rwkv.PP_INIT)
_INV_SQRT2 = _F32(1.0 / math.sqrt(2.0))


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
