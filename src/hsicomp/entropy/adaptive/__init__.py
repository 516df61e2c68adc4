"""Context-adaptive range coder for signed prediction residuals (``arith``).

Codes residuals ``e = x - p`` of a cube with shape (bands I, rows T, cols C) one band-line
(all C columns of band i on row t) at a time, in BIL order (row, band, column). Every model
parameter is computed with integer arithmetic from residuals both sides already know, so
encoder and decoder agree bit for bit on any machine. The symbols are coded with the range
coder of :mod:`hsicomp.entropy.rangecoder` (24-bit probabilities, 32-bit words); model
building and coding of a whole band-line (or cube) run in one compiled numba call that
releases the GIL.

>>> import numpy as np
>>> predictions = np.full((2, 3, 4), 100, dtype=np.int64)
>>> residuals = np.array([[[0, 1, -1, 2], [3, 0, 0, -2], [1, 1, 0, 0]],
...                       [[0, 0, 1, 1], [-1, 0, 2, 0], [0, -3, 0, 1]]])
>>> data = encode_cube(residuals, predictions, max_value=4095)
>>> decode_cube(data, predictions, max_value=4095).tolist() == residuals.tolist()
True

Symbols
    A residual is flipped (``e' = s * e``, ``s = +-1``, see below) and split into a signed
    token and an optional mantissa. Magnitudes ``m = |e'| < 16`` are their own token; larger
    magnitudes with bit length ``b`` get token ``16 + 4 (b - 5) + f``, where ``f`` are the
    two bits below the leading one, followed by the ``b - 3`` low bits as a mantissa. The
    token alphabet is ``-63..63`` (127 symbols), enough for any ``|e| < 2**16``, so no
    escape symbol is needed. The mantissa is coded with a uniform model over the values of
    the token's bucket that lie inside the residual's real range ``[-p, max_value - p]``
    (nothing is coded when only one value is left); as in constriction's ``Uniform(n)``,
    each of the ``n`` values gets ``2**24 // n`` and the last one the rest of ``2**24``.

Context model (per sample of band-line (t, i), column c; columns are coded in order)
    * ``A = 2|e[i-1,t,c]| + |e[i-1,t,c-1]| + |e[i-1,t,c+1]|`` (previous band, same row) and
      ``B``, the same over band i on row t - 1 (edge columns are repeated); when one of the
      two is missing (band 0 or row 0) it takes the other's value. ``L = 3|e[i,t,c-1]| +
      |e[i,t,c-2]|`` from the samples to the left on the same band-line (in column 1
      ``|e[i,t,0]|`` stands for the missing ``|e[i,t,-1]|``; ``L = (A + B) // 2`` in
      column 0).
    * ``R = 4 * mean |e|`` of band i over the previous rows, a running mean kept as an
      integer accumulator and counter that are halved every ``_BAND_LIMIT`` samples.
    * The context is ``(q(A + B + L), r(A, B), r(2L, A + B), r(3R, A + B + L))``: ``q`` is
      a log2 quantiser with two steps per octave (40 levels) and ``r`` a five-level ratio
      quantiser, which gives 5000 contexts. Each context learns the mean ``|e|`` of its
      samples with an integer accumulator and counter (halved every 64 samples, CCSDS-123
      style); that mean, quantised on a log2 scale with two steps per octave (48 scales
      from 1/256 up), picks the token distribution's scale.
    * Sign: the signs (-, 0, +) of ``e[i-1,t,c]``, ``e[i,t-1,c]``, ``e[i,t-1,c+1]``,
      ``e[i,t-1,c-1]`` and ``e[i,t,c-1]`` (0 where missing) form one of 243 sign patterns.
      Each pattern counts the positive and negative residuals coded under it (integers,
      2 per sample, started at 4 and 4, halved when their sum passes 2**12). The flip is
      ``s = -1`` when the pattern's negative count is the larger (so the likelier sign is
      always coded as +), and the share ``big / (pos + neg)`` of the larger count,
      quantised at 0.54, 0.60, 0.68 and 0.80 (integer comparisons), splits every scale in
      five, for 240 token distributions.
    * Each distribution is an adaptive histogram (integer counts, +32 per sample, halved
      when the total passes 2**21), started from a two-sided geometric prior with the
      scale's mean worth 128 samples. The prior is computed with Python integers
      (fixed-point square root and powers). Counts become frequencies ``f >= 1`` summing
      to exactly 2**24 by integer division (the same frequencies constriction's
      ``Categorical(f - 1, perfect=False)`` quantises to). A distribution is rebuilt after
      a band-line once its new samples (at least 8) carry 1/32 of its weight.

Columns are coded in order, each sample's token directly followed by its mantissa, so the
left neighbours are known to the decoder when it builds a sample's context. All learnt
statistics (context means, sign-pattern counts, histograms and distributions, band means)
are those from before the band-line: the line's samples update them once it is coded.
The stream is a version byte (2; streams of another version are refused with a
ValueError), the number of 32-bit words (uint32, little endian) and the words (little
endian).

The model has to learn its statistics: on tiny inputs of i.i.d. noise (about 10**4
samples) that costs a few hundredths of a bit per sample, enough to trail the one-parameter
Golomb coder there; on larger or spatially/spectrally structured inputs it is ahead.

The package is split by level: ``constants`` (model and stream constants), ``tables``
(initial distributions), ``kernels`` (the compiled model and coding of a band-line),
``memory`` (an encoder's or decoder's state in one array, and the compiled calls on it) and
``api`` (``ResidualEncoder``, ``ResidualDecoder``, ``encode_cube``, ``decode_cube``).

numba's on-disk cache of a compiled function only watches the file that defines it, while
the functions here compile in code from the other files of the package and from
:mod:`hsicomp.entropy.rangecoder`. So every function is compiled with
:func:`hsicomp.numba_cache.cached_njit` over all those files: editing any of them recompiles
them all.
"""

from hsicomp.entropy.adaptive.api import ResidualDecoder, ResidualEncoder, decode_cube, encode_cube

__all__ = [
    "ResidualDecoder",
    "ResidualEncoder",
    "decode_cube",
    "encode_cube",
]
