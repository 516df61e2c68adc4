"""Constants of the model and the stream, and the compilation options."""

from __future__ import annotations

from pathlib import Path

from hsicomp.entropy import rangecoder
from hsicomp.entropy.rangecoder import RC_PRECISION
from hsicomp.numba_cache import cached_njit

_VERSION = 2
_HEADER = 5  # version byte + uint32 word count

_NTOK = 64  # magnitude tokens 0..63
_NSYM = 2 * _NTOK - 1  # signed tokens -63..63, stored as 0..126
_ZERO = _NTOK - 1  # symbol of e' == 0
_PRECISION = int(RC_PRECISION)  # frequencies sum to 2**24
_TOTAL = 1 << _PRECISION

_NQ = 40  # levels of q(A + B + L); A + B + L <= 12 * 65535 < 2**20
_NR = 5  # levels of a ratio quantiser
_NCTX = _NQ * _NR * _NR * _NR
_NPAT = 243  # sign patterns: signs of five neighbours
_PAT_INIT = 4  # initial positive and negative counts of a sign pattern
_PAT_LIMIT = 1 << 12  # a sign pattern's counts are halved above this total
_CTX_INIT_N = 4  # initial counter of a context's mean
_CTX_LIMIT = 64  # a context's accumulator and counter are halved at this count
_NSCALE = 48  # scales: log2 steps of mean |e| in 1/256 units, two per octave
_NSIGN = 5  # sign-confidence levels
_NHIST = _NSCALE * _NSIGN
_INC = 32  # histogram increment per sample
_PRIOR_WEIGHT = 4096  # histogram weight of the prior (128 samples)
_HIST_LIMIT = 1 << 21  # histogram counts are halved above this total
_REBUILD_MIN = 8  # least new samples before a distribution is rebuilt
_REBUILD_FRACTION = 32  # rebuilt once the new samples reach 1/32 of the total weight
_BAND_LIMIT = 1 << 14  # band running mean: halved at this many samples
_LUT_SHIFT = 16  # decoder lookup tables: one entry per 2**16 of 2**24
_LUT_SIZE = 1 << (_PRECISION - _LUT_SHIFT)

# status codes of the decoding kernels
_OK, _BAD_PREDICTION, _CORRUPT, _INVALID, _LEFTOVER = 0, -1, -2, -3, -4
_DECODE_ERRORS = {
    _BAD_PREDICTION: "a prediction is outside [0, max_value]",
    _CORRUPT: "corrupt stream: decoded residual outside its range",
    _INVALID: "corrupt stream: invalid range coder data",
    _LEFTOVER: "corrupt stream: data left after the last band-line",
}

#: Files whose code or constants the compiled functions use: the package's own and the
#: range coder's. numba's cache of a function only checks the file defining it, so every
#: function here is cached under the digest of all of them instead.
_SOURCES = (*sorted(Path(__file__).parent.glob("*.py")), Path(rangecoder.__file__))
_jit = cached_njit(_SOURCES, nogil=True, error_model="numpy")
_inline = cached_njit(_SOURCES, nogil=True, error_model="numpy", inline="always")
