"""CCSDS-123.0-B-2 sample-adaptive Golomb-power-of-2 entropy coder.

Codes a cube of mapped (non-negative) prediction residuals with shape (bands, rows, cols).
Each band keeps its own counter Gamma and accumulator Sigma; the code parameter k of a
sample follows from the band's state, and the state is updated after every coded sample.
The first sample of each band (row 0, column 0) is written raw in D bits and does not touch
the state. Bits are written MSB-first and the last byte is zero padded.

>>> import numpy as np
>>> mapped = np.array([[[5, 0, 1, 2], [3, 1, 0, 0]]], dtype=np.int64)  # 1 band, 2 rows
>>> params = SampleAdaptiveParams(dynamic_range=8)
>>> data = encode(mapped, params)
>>> bit_count(mapped, params) <= 8 * len(data)
True
>>> decode(data, mapped.shape, params).tolist()
[[[5, 0, 1, 2], [3, 1, 0, 0]]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = [
    "ORDERS",
    "SampleAdaptiveParams",
    "bit_count",
    "code_lengths",
    "decode",
    "encode",
    "encode_bands",
]

#: Sample orders: name -> (axis permutation of the (bands, rows, cols) cube, band axis).
ORDERS: dict[str, tuple[tuple[int, int, int], int]] = {
    "bil": ((1, 0, 2), 1),  # row, band, column
    "bsq": ((0, 1, 2), 0),  # band, row, column
    "bip": ((1, 2, 0), 2),  # row, column, band
}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


@dataclass(frozen=True)
class SampleAdaptiveParams:
    """Parameters of the sample-adaptive coder (defaults: the LineRWKV settings).

    dynamic_range: D, bits per mapped residual (2..16); raw first samples and escaped
        values are written in D bits and every value must be < 2**D.
    u_max: U_max, unary length limit (8..32); a sample whose unary part delta >> k would
        reach U_max is escaped as U_max zeros followed by delta in D bits.
    gamma0: initial counter exponent (1..8), Gamma starts at 2**gamma0.
    k_init: K, initial accumulator constant (0..min(D - 2, 14)); sets the starting
        Sigma = floor((3 * 2**(K + 6) - 49) * Gamma / 2**7).
    gamma_star: rescaling counter exponent (max(4, gamma0 + 1)..11); once Gamma reaches
        2**gamma_star - 1, Sigma and Gamma are halved instead of incremented.
    """

    dynamic_range: int = 16
    u_max: int = 18
    gamma0: int = 1
    k_init: int = 3
    gamma_star: int = 6

    def __post_init__(self) -> None:
        _check_int("dynamic_range", self.dynamic_range, 2, 16)
        _check_int("u_max", self.u_max, 8, 32)
        _check_int("gamma0", self.gamma0, 1, 8)
        _check_int("k_init", self.k_init, 0, min(self.dynamic_range - 2, 14))
        _check_int("gamma_star", self.gamma_star, max(4, self.gamma0 + 1), 11)

    def _args(self) -> tuple[int, int, int, int, int]:
        return (
            int(self.dynamic_range),
            int(self.u_max),
            int(self.gamma0),
            int(self.k_init),
            int(self.gamma_star),
        )


DEFAULT_PARAMS = SampleAdaptiveParams()


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def _init_state(nbands, gamma0, k_init):
    gamma = np.full(nbands, 1 << gamma0, np.int64)
    sigma = np.full(nbands, ((3 * (1 << (k_init + 6)) - 49) * (1 << gamma0)) >> 7, np.int64)
    return gamma, sigma


@njit(cache=True)
def _code_param(g, s, kmax):
    """Largest k <= kmax with g * 2**k <= s + floor(49 g / 2**7) (0 if none)."""
    thr = s + ((49 * g) >> 7)
    k = 0
    while k < kmax and (g << (k + 1)) <= thr:
        k += 1
    return k


@njit(cache=True)
def _band_and_first(i0, i1, i2, band_axis):
    """Band index of a sample and whether it is the band's first (y = 0, x = 0) sample."""
    if band_axis == 0:
        return i0, i1 == 0 and i2 == 0
    if band_axis == 1:
        return i1, i0 == 0 and i2 == 0
    return i2, i0 == 0 and i1 == 0


@njit(cache=True)
def _lengths_kernel(seq, shape, band_axis, nbands, d, u_max, gamma0, k_init, gamma_star):
    a0, a1, a2 = shape
    lengths = np.empty(a0 * a1 * a2, np.uint8)
    gamma, sigma = _init_state(nbands, gamma0, k_init)
    gmax = (1 << gamma_star) - 1
    i = 0
    for i0 in range(a0):
        for i1 in range(a1):
            for i2 in range(a2):
                delta = np.int64(seq[i])
                z, first = _band_and_first(i0, i1, i2, band_axis)
                if first:
                    lengths[i] = d
                else:
                    g = gamma[z]
                    s = sigma[z]
                    k = _code_param(g, s, d - 2)
                    u = delta >> k
                    lengths[i] = u + 1 + k if u < u_max else u_max + d
                    if g < gmax:
                        sigma[z] = s + delta
                        gamma[z] = g + 1
                    else:
                        sigma[z] = (s + delta + 1) >> 1
                        gamma[z] = (g + 1) >> 1
                i += 1
    return lengths


@njit(cache=True)
def _encode_kernel(seq, shape, band_axis, nbands, d, u_max, gamma0, k_init, gamma_star,
                   band_bits):
    """Encode ``seq``; add the codeword bits of every band to ``band_bits``."""
    a0, a1, a2 = shape
    n = a0 * a1 * a2
    out = np.zeros(n * (u_max + d) // 8 + 8, np.uint8)
    gamma, sigma = _init_state(nbands, gamma0, k_init)
    gmax = (1 << gamma_star) - 1
    acc = np.int64(0)  # holds the nacc (< 8) pending bits between samples
    nacc = 0
    pos = 0
    i = 0
    for i0 in range(a0):
        for i1 in range(a1):
            for i2 in range(a2):
                delta = np.int64(seq[i])
                i += 1
                z, first = _band_and_first(i0, i1, i2, band_axis)
                if first:
                    val = delta
                    nb = d
                else:
                    g = gamma[z]
                    s = sigma[z]
                    k = _code_param(g, s, d - 2)
                    u = delta >> k
                    if u < u_max:
                        # u zeros, a one, then the k low bits of delta
                        val = (np.int64(1) << k) | (delta & ((np.int64(1) << k) - 1))
                        nb = u + 1 + k
                    else:
                        # escape: u_max zeros, then delta in d bits
                        val = delta
                        nb = u_max + d
                    if g < gmax:
                        sigma[z] = s + delta
                        gamma[z] = g + 1
                    else:
                        sigma[z] = (s + delta + 1) >> 1
                        gamma[z] = (g + 1) >> 1
                band_bits[z] += nb
                acc = (acc << nb) | val
                nacc += nb
                while nacc >= 8:
                    nacc -= 8
                    out[pos] = (acc >> nacc) & 0xFF
                    pos += 1
                acc &= (np.int64(1) << nacc) - 1
    if nacc > 0:
        out[pos] = (acc << (8 - nacc)) & 0xFF
        pos += 1
    return out[:pos]


@njit(cache=True)
def _decode_kernel(data, out, shape, band_axis, nbands, d, u_max, gamma0, k_init, gamma_star):
    """Decode into ``out`` (coding order); return bits consumed, or -1 when out of data."""
    a0, a1, a2 = shape
    nbytes = data.size
    gamma, sigma = _init_state(nbands, gamma0, k_init)
    gmax = (1 << gamma_star) - 1
    dmask = (np.int64(1) << d) - 1
    acc = np.int64(0)  # holds the nacc unread bits, right aligned
    nacc = 0
    pos = 0
    i = 0
    for i0 in range(a0):
        for i1 in range(a1):
            for i2 in range(a2):
                while nacc <= 55 and pos < nbytes:
                    acc = (acc << 8) | np.int64(data[pos])
                    pos += 1
                    nacc += 8
                z, first = _band_and_first(i0, i1, i2, band_axis)
                if first:
                    if nacc < d:
                        return -1
                    nacc -= d
                    delta = (acc >> nacc) & dmask
                else:
                    g = gamma[z]
                    s = sigma[z]
                    k = _code_param(g, s, d - 2)
                    u = 0
                    while True:
                        if nacc == 0:
                            return -1
                        nacc -= 1
                        if (acc >> nacc) & 1:
                            break
                        u += 1
                        if u == u_max:
                            break
                    if u < u_max:
                        if nacc < k:
                            return -1
                        nacc -= k
                        delta = (np.int64(u) << k) | ((acc >> nacc) & ((np.int64(1) << k) - 1))
                    else:
                        if nacc < d:
                            return -1
                        nacc -= d
                        delta = (acc >> nacc) & dmask
                    if g < gmax:
                        sigma[z] = s + delta
                        gamma[z] = g + 1
                    else:
                        sigma[z] = (s + delta + 1) >> 1
                        gamma[z] = (g + 1) >> 1
                acc &= (np.int64(1) << nacc) - 1
                out[i] = delta
                i += 1
    return pos * 8 - nacc


# --------------------------------------------------------------------------- helpers


def _order(order: str) -> tuple[tuple[int, int, int], int]:
    try:
        return ORDERS[order.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"order must be one of {sorted(ORDERS)}, got {order!r}") from None


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"expected a (bands, rows, cols) cube, got shape {tuple(shape)}")
    dims = tuple(int(s) for s in shape)
    if min(dims) < 1:
        raise ValueError(f"every dimension must be >= 1, got shape {dims}")
    return dims  # type: ignore[return-value]


def _prepare(
    mapped: np.ndarray, params: SampleAdaptiveParams, order: str
) -> tuple[np.ndarray, tuple[int, int, int], int, int]:
    """Validate a cube and return it flattened in coding order, with the coding shape."""
    arr = np.asarray(mapped)
    shape = _check_shape(arr.shape)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"mapped residuals must have an integer dtype, got {arr.dtype}")
    perm, band_axis = _order(order)
    if int(arr.min()) < 0:
        raise ValueError("mapped residuals must be non-negative")
    limit = 1 << params.dynamic_range
    if int(arr.max()) >= limit:
        raise ValueError(
            f"mapped residual {int(arr.max())} does not fit in "
            f"dynamic_range={params.dynamic_range} bits (must be < {limit})"
        )
    seq = np.ascontiguousarray(arr.transpose(perm), dtype=np.uint32)
    return seq.reshape(-1), seq.shape, band_axis, shape[0]


# --------------------------------------------------------------------------- public API


def encode(
    mapped: np.ndarray, params: SampleAdaptiveParams = DEFAULT_PARAMS, order: str = "bil"
) -> bytes:
    """Encode mapped residuals (bands, rows, cols), each in [0, 2**D), to a bitstream."""
    return encode_bands(mapped, params, order)[0]


def encode_bands(
    mapped: np.ndarray, params: SampleAdaptiveParams = DEFAULT_PARAMS, order: str = "bil"
) -> tuple[bytes, np.ndarray]:
    """``encode``, plus the codeword bits of every band (int64, one per band).

    The band bits sum to the bitstream's length in bits before the last byte's padding.
    """
    seq, cshape, band_axis, nbands = _prepare(mapped, params, order)
    band_bits = np.zeros(nbands, np.int64)
    out = _encode_kernel(seq, cshape, band_axis, nbands, *params._args(), band_bits)
    return out.tobytes(), band_bits


def code_lengths(
    mapped: np.ndarray, params: SampleAdaptiveParams = DEFAULT_PARAMS, order: str = "bil"
) -> np.ndarray:
    """Codeword length in bits of every sample, as a uint8 array shaped like ``mapped``."""
    seq, cshape, band_axis, nbands = _prepare(mapped, params, order)
    lengths = _lengths_kernel(seq, cshape, band_axis, nbands, *params._args())
    perm, _ = _order(order)
    return np.ascontiguousarray(lengths.reshape(cshape).transpose(np.argsort(perm)))


def bit_count(
    mapped: np.ndarray, params: SampleAdaptiveParams = DEFAULT_PARAMS, order: str = "bil"
) -> int:
    """Exact number of bits ``encode`` produces before padding to whole bytes."""
    seq, cshape, band_axis, nbands = _prepare(mapped, params, order)
    lengths = _lengths_kernel(seq, cshape, band_axis, nbands, *params._args())
    return int(lengths.sum(dtype=np.int64))


def decode(
    data: bytes,
    shape: tuple[int, int, int],
    params: SampleAdaptiveParams = DEFAULT_PARAMS,
    order: str = "bil",
) -> np.ndarray:
    """Decode a bitstream from ``encode`` into a uint16 (bands, rows, cols) array.

    Raises ValueError when the data ends early or has bytes beyond the coded samples
    (the bits padding the last byte are ignored).
    """
    dims = _check_shape(tuple(shape))
    perm, band_axis = _order(order)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    nbands = dims[0]
    n = dims[0] * dims[1] * dims[2]
    # every sample takes at least one bit and every band's first sample D bits
    min_bits = nbands * params.dynamic_range + (n - nbands)
    if buf.size * 8 < min_bits:
        raise ValueError(
            f"bitstream too short: {buf.size} bytes cannot hold {n} samples "
            f"(at least {(min_bits + 7) // 8} bytes needed)"
        )
    cshape = tuple(dims[p] for p in perm)
    out = np.empty(n, dtype=np.uint16)
    used = _decode_kernel(buf, out, cshape, band_axis, nbands, *params._args())
    if used < 0:
        raise ValueError("bitstream truncated or corrupt: ran out of bits while decoding")
    if (used + 7) // 8 != buf.size:
        raise ValueError(
            f"bitstream has {buf.size - (used + 7) // 8} trailing bytes after the last sample"
        )
    return np.ascontiguousarray(out.reshape(cshape).transpose(np.argsort(perm)))
