"""Factorized entropy model of integer latents (Balle et al. 2018) and its range coder.

Training
    ``FactorizedEntropyModel`` learns one monotone cumulative density ``c_k`` per latent
    channel ``k``: a chain of small per-channel layers ``x <- softplus(H) x + b`` (widths
    ``1 -> 3 -> 3 -> 3 -> 1``), each but the last followed by ``x <- x + tanh(a) * tanh(x)``.
    Softplus keeps the matrices positive and ``tanh(a) > -1`` keeps every layer increasing,
    so the output ``l(y)`` is increasing in ``y`` and ``c = sigmoid(l)`` is a cumulative
    density. The likelihood of a (noisy or rounded) latent is ``c(y + 1/2) - c(y - 1/2)``,
    computed on the side of the median where the sigmoid is not saturated (see
    ``likelihood``), and the rate is ``sum(-log2(likelihood))`` bits.

Freezing
    ``FactorizedEntropyModel.freeze`` evaluates the learned densities once (float64, on the
    integers ``-search_range..search_range``) and turns them into integer tables
    (``FrozenTables``): per channel a support ``[lo, hi]`` outside which the density has
    less than ``tail_mass`` in total, and integer frequencies ``f >= 1`` for the symbols
    ``lo..hi`` plus one escape symbol, summing to exactly ``2**precision``. The tables are
    buffers of the module (saved in its ``state_dict``) and are the only thing
    ``encode_latents`` / ``decode_latents`` use, so encoder and decoder agree bit for bit on
    any machine, whatever float differences the networks have.

Stream (``encode_latents``)
    Channel by channel, raster order, every latent ``v`` is coded as the symbol ``v - lo``
    when ``lo <= v <= hi`` and as the escape symbol (index ``hi - lo + 1``) otherwise, with
    constriction's ``RangeEncoder`` (``constriction.stream.queue``) and its
    ``Categorical`` model. Constriction quantises float probabilities itself; given the
    float values ``f * 2**(24 - precision) - 1`` (exact integers) and ``perfect=False`` it
    assigns exactly the frequencies ``f * 2**(24 - precision)`` out of ``2**24``, i.e. our
    table. After all channels come the escaped values (in the same order): all sides
    (``v > hi``: 1, ``v < lo``: 0) with ``Uniform(2)``, then for the distance
    ``d = v - hi - 1`` or ``lo - 1 - v`` the bit length ``b`` of ``d + 1`` minus one with
    ``Uniform(24)``, then the ``b`` low bits of ``d + 1`` with ``Uniform(2**b)`` (nothing
    when ``b = 0``): an Exp-Golomb code carried by the range coder. Latents must satisfy
    ``|v| <= MAX_ABS_LATENT``.

    The bytes are a version byte (1), the CRC-32 of the words (uint32, little endian) and
    the range coder's 32-bit words (little endian). Decoding checks version, length, CRC
    and that every word was consumed, and raises ``ValueError`` otherwise.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MAX_ABS_LATENT",
    "FactorizedEntropyModel",
    "FrozenTables",
    "decode_latents",
    "encode_latents",
    "quantize_pmf",
]

STREAM_VERSION = 1
MAX_ABS_LATENT = 1 << 22
"""Largest latent magnitude ``encode_latents`` accepts."""
MAX_SYMBOLS = 1 << 26
"""Largest number of latents ``decode_latents`` will allocate for (by default)."""
_CODER_PRECISION = 24  # constriction's RangeEncoder: 24-bit probabilities
_HEADER = 5


def _softplus_inv(x: float) -> float:
    return math.log(math.expm1(x))


def quantize_pmf(pmf: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies ``f >= 1`` summing to exactly ``2**precision`` for ``pmf``.

    Every entry gets 1 plus the floor of its share of the remaining ``2**precision - n``;
    the leftover units go, one each, to the entries with the largest fractional parts
    (ties by index). Deterministic for a given float64 ``pmf``.
    """
    p = np.asarray(pmf, dtype=np.float64)
    n = p.size
    total = 1 << precision
    if n < 1 or 2 * n > total:
        raise ValueError(f"cannot quantise {n} symbols to {precision}-bit frequencies")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("pmf must be finite, non-negative and not all zero")
    share = p / p.sum() * (total - n)
    base = np.floor(share)
    freq = 1 + base.astype(np.int64)
    left = total - int(freq.sum())
    if left > 0:
        order = np.argsort(-(share - base), kind="stable")
        freq[order[:left]] += 1
    assert int(freq.sum()) == total
    return freq


@dataclass(frozen=True)
class FrozenTables:
    """Integer coding tables: per channel ``lo`` and frequencies of ``lo..hi`` + escape.

    ``freqs[k]`` has ``hi - lo + 2`` entries (the last one is the escape symbol), each
    ``>= 1``, summing to ``2**precision``.
    """

    precision: int
    lo: tuple[int, ...]
    freqs: tuple[np.ndarray, ...]

    @property
    def channels(self) -> int:
        """Number of latent channels."""
        return len(self.lo)

    def hi(self, k: int) -> int:
        """Largest in-range value of channel ``k``."""
        return self.lo[k] + len(self.freqs[k]) - 2

    def ideal_bits(self, y_int: np.ndarray) -> float:
        """Ideal code length in bits of ``y_int`` (M, h, w) under these tables.

        Symbols cost ``-log2(f / 2**precision)``; escaped values add their Exp-Golomb
        payload (1 side bit, ``log2(24)`` for the bit length, ``b`` mantissa bits).
        """
        y = _check_latents(y_int, self)
        bits = 0.0
        for k in range(self.channels):
            sym, esc_vals = _symbols(y[k].ravel(), self.lo[k], self.hi(k))
            logp = np.log2(self.freqs[k].astype(np.float64)) - self.precision
            bits -= float(logp[sym].sum())
            if esc_vals.size:
                _, nbits, _ = _escape_parts(esc_vals, self.lo[k], self.hi(k))
                bits += esc_vals.size * (1.0 + math.log2(24)) + float(nbits.sum())
        return bits


def _symbols(v: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbol indices (escape = hi - lo + 1) and the escaped values of one channel."""
    idx = v - lo
    esc = (v < lo) | (v > hi)
    sym = np.where(esc, hi - lo + 1, idx).astype(np.int32)
    return sym, v[esc]


def _escape_parts(vals: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, ...]:
    """Side bit, bit length ``b`` and mantissa of escaped values."""
    side = (vals > hi).astype(np.int32)
    d = np.where(side == 1, vals - hi - 1, lo - 1 - vals).astype(np.int64) + 1
    nbits = np.zeros(d.shape, dtype=np.int32)
    rest = d.copy()
    for _ in range(_CODER_PRECISION):  # bit length minus one, vectorised
        rest >>= 1
        nbits += (rest > 0).astype(np.int32)
    mant = (d - (np.int64(1) << nbits.astype(np.int64))).astype(np.int32)
    return side, nbits, mant


def _check_latents(y_int: np.ndarray, tables: FrozenTables) -> np.ndarray:
    y = np.asarray(y_int)
    if y.ndim != 3:
        raise ValueError(f"latents must have shape (M, h, w), got {y.shape}")
    if y.shape[0] != tables.channels:
        raise ValueError(f"latents have {y.shape[0]} channels, tables {tables.channels}")
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.array_equal(y, np.rint(y)):
        raise ValueError("latents must be integers")
    if y.size and not np.issubdtype(y.dtype, np.integer) and not np.all(np.isfinite(y)):
        raise ValueError("latents must be finite")
    y = y.astype(np.int64)
    if y.size and int(np.abs(y).max()) > MAX_ABS_LATENT:
        raise ValueError(f"latent magnitude above {MAX_ABS_LATENT} cannot be coded")
    return y


def _categorical(freq: np.ndarray, precision: int) -> Any:
    import constriction

    scaled = freq.astype(np.float64) * float(1 << (_CODER_PRECISION - precision)) - 1.0
    return constriction.stream.model.Categorical(scaled, perfect=False)


def encode_latents(y_int: np.ndarray, tables: FrozenTables) -> bytes:
    """Range-code integer latents ``(M, h, w)`` with the frozen ``tables``; see module doc."""
    import constriction

    y = _check_latents(y_int, tables)
    enc = constriction.stream.queue.RangeEncoder()
    sides, nbits, mants = [], [], []
    for k in range(tables.channels):
        lo, hi = tables.lo[k], tables.hi(k)
        sym, esc_vals = _symbols(y[k].ravel(), lo, hi)
        if sym.size:
            enc.encode(sym, _categorical(tables.freqs[k], tables.precision))
        if esc_vals.size:
            s, b, m = _escape_parts(esc_vals, lo, hi)
            sides.append(s)
            nbits.append(b)
            mants.append(m)
    if sides:
        _encode_escapes(enc, np.concatenate(sides), np.concatenate(nbits),
                        np.concatenate(mants))
    words = np.asarray(enc.get_compressed(), dtype="<u4").tobytes()
    crc = zlib.crc32(words).to_bytes(4, "little")
    return bytes([STREAM_VERSION]) + crc + words


def _encode_escapes(enc: Any, side: np.ndarray, nbits: np.ndarray, mant: np.ndarray) -> None:
    import constriction

    model = constriction.stream.model
    enc.encode(side.astype(np.int32), model.Uniform(2))
    enc.encode(nbits.astype(np.int32), model.Uniform(_CODER_PRECISION))
    has = nbits > 0
    if np.any(has):
        sizes = (np.int32(1) << nbits[has]).astype(np.int32)
        enc.encode(mant[has].astype(np.int32), model.Uniform(), sizes)


def decode_latents(data: bytes, shape: tuple[int, int, int], tables: FrozenTables,
                   max_symbols: int = MAX_SYMBOLS) -> np.ndarray:
    """Decode ``encode_latents`` output into int32 latents of ``shape`` (M, h, w).

    Raises ``ValueError`` on a bad version, length or checksum, a shape that does not fit
    the tables or ``max_symbols``, or a stream that does not decode to exactly its words.
    """
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad latent shape {shape!r}") from exc
    if len(dims) != 3 or min(dims) < 0:
        raise ValueError(f"latent shape must be 3 non-negative ints, got {shape!r}")
    if dims[0] != tables.channels:
        raise ValueError(f"latent shape has {dims[0]} channels, tables {tables.channels}")
    count = dims[0] * dims[1] * dims[2]
    if count > max_symbols:
        raise ValueError(f"latent shape {dims} exceeds the limit of {max_symbols} symbols")
    buf = bytes(data)
    if len(buf) < _HEADER or (len(buf) - _HEADER) % 4:
        raise ValueError(f"latent stream truncated or malformed ({len(buf)} bytes)")
    if buf[0] != STREAM_VERSION:
        raise ValueError(f"unsupported latent stream version {buf[0]}")
    words = buf[_HEADER:]
    if zlib.crc32(words) != int.from_bytes(buf[1:_HEADER], "little"):
        raise ValueError("latent stream corrupted (CRC mismatch)")
    try:
        return _decode_words(np.frombuffer(words, dtype="<u4").astype(np.uint32), dims, tables)
    except ValueError:
        raise
    except Exception as exc:  # constriction raises its own errors on invalid data
        raise ValueError(f"latent stream could not be decoded: {exc}") from exc


def _decode_words(words: np.ndarray, dims: tuple[int, int, int],
                  tables: FrozenTables) -> np.ndarray:
    import constriction

    m, h, w = dims
    out = np.empty((m, h * w), dtype=np.int64)
    dec = constriction.stream.queue.RangeDecoder(words)
    esc_k: list[np.ndarray] = []
    esc_p: list[np.ndarray] = []
    for k in range(m):
        lo, hi = tables.lo[k], tables.hi(k)
        if h * w:
            sym = np.asarray(dec.decode(_categorical(tables.freqs[k], tables.precision), h * w))
        else:
            sym = np.zeros(0, dtype=np.int32)
        out[k] = sym.astype(np.int64) + lo
        pos = np.flatnonzero(sym == hi - lo + 1)
        esc_k.append(np.full(pos.size, k, dtype=np.int64))
        esc_p.append(pos.astype(np.int64))
    ks = np.concatenate(esc_k) if esc_k else np.zeros(0, dtype=np.int64)
    ps = np.concatenate(esc_p) if esc_p else np.zeros(0, dtype=np.int64)
    if ks.size:
        model = constriction.stream.model
        n = int(ks.size)
        side = np.asarray(dec.decode(model.Uniform(2), n)).astype(np.int64)
        nbits = np.asarray(dec.decode(model.Uniform(_CODER_PRECISION), n)).astype(np.int64)
        mant = np.zeros(n, dtype=np.int64)
        has = nbits > 0
        if np.any(has):
            sizes = (np.int32(1) << nbits[has].astype(np.int32)).astype(np.int32)
            mant[has] = np.asarray(dec.decode(model.Uniform(), sizes)).astype(np.int64)
        d = (np.int64(1) << nbits) + mant - 1
        lo_arr = np.asarray(tables.lo, dtype=np.int64)[ks]
        hi_arr = lo_arr + np.asarray([len(f) for f in tables.freqs], dtype=np.int64)[ks] - 2
        out[ks, ps] = np.where(side == 1, hi_arr + 1 + d, lo_arr - 1 - d)
    if not dec.maybe_exhausted():
        raise ValueError("latent stream has data left over after decoding (corrupt stream)")
    if out.size and int(np.abs(out).max()) > MAX_ABS_LATENT:
        raise ValueError("latent stream decoded to out-of-range values (corrupt stream)")
    return out.reshape(dims).astype(np.int32)


class FactorizedEntropyModel(nn.Module):
    """Learned per-channel monotone cumulative density; likelihoods and frozen tables.

    ``forward(y)`` takes latents ``(B, channels, H, W)`` (noisy in training, rounded at
    test time) and returns their likelihoods, bounded below by ``likelihood_bound``.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3),
                 init_scale: float = 10.0, likelihood_bound: float = 1e-9) -> None:
        super().__init__()
        self.channels = int(channels)
        self.likelihood_bound = float(likelihood_bound)
        widths = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = _softplus_inv(1.0 / scale / widths[i + 1])
            self.matrices.append(nn.Parameter(
                torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(
                torch.rand(channels, widths[i + 1], 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.register_buffer("table_lo", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("table_freq", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("table_size", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("table_precision", torch.zeros((), dtype=torch.int64))

    def logits_cumulative(self, x: Tensor) -> Tensor:
        """Logit of the cumulative density at ``x`` of shape (channels, 1, L)."""
        for i, (mat, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(mat.to(x.dtype)), x) + bias.to(x.dtype)
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i].to(x.dtype)) * torch.tanh(x)
        return x

    def likelihood(self, y: Tensor) -> Tensor:
        """``c(y + 1/2) - c(y - 1/2)`` per element of ``y`` (channels, 1, L), unbounded.

        Both sigmoids are taken on the side of the median where they are small
        (``sign = -sign(lower + upper)`` flips the upper half), which avoids the
        cancellation of two numbers close to 1.
        """
        lower = self.logits_cumulative(y - 0.5)
        upper = self.logits_cumulative(y + 0.5)
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward(self, y: Tensor) -> Tensor:
        """Likelihoods of latents ``y`` (B, channels, H, W), same shape."""
        b, c, h, w = y.shape
        if c != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {c}")
        flat = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lik = self.likelihood(flat).clamp_min(self.likelihood_bound)
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    @staticmethod
    def bits(likelihoods: Tensor) -> Tensor:
        """Rate in bits: ``sum(-log2(likelihoods))``."""
        return -torch.log2(likelihoods).sum()

    @torch.no_grad()
    def freeze(self, precision: int = 16, tail_mass: float = 1e-6,
               search_range: int = 4096) -> FrozenTables:
        """Compute integer tables from the current weights, store them as buffers, return them.

        The support of channel ``k`` is the smallest ``[lo, hi]`` within
        ``[-search_range, search_range]`` outside which each tail has at most
        ``tail_mass / 2``; the escape symbol carries the mass outside. Deterministic for
        given weights (float64 evaluation, then ``quantize_pmf``).
        """
        if not 2 <= precision <= _CODER_PRECISION:
            raise ValueError(f"precision must be in 2..{_CODER_PRECISION}, got {precision}")
        grid = torch.arange(-search_range, search_range + 1, dtype=torch.float64)
        x = grid.reshape(1, 1, -1).expand(self.channels, 1, -1).contiguous()
        below = torch.sigmoid(self.logits_cumulative(x - 0.5))[:, 0].numpy()  # mass < v
        above = torch.sigmoid(-self.logits_cumulative(x + 0.5))[:, 0].numpy()  # mass > v
        pmf_all = self.likelihood(x)[:, 0].numpy()
        values = grid.numpy().astype(np.int64)
        los, freqs = [], []
        max_symbols = (1 << precision) // 2 - 1
        for k in range(self.channels):
            ok_lo = np.flatnonzero(above[k] + pmf_all[k] > tail_mass / 2)  # mass >= v
            ok_hi = np.flatnonzero(below[k] + pmf_all[k] > tail_mass / 2)  # mass <= v
            i0 = int(ok_hi[0]) if ok_hi.size else 0
            i1 = int(ok_lo[-1]) if ok_lo.size else len(values) - 1
            if i1 < i0:
                i0 = i1 = int(np.argmax(pmf_all[k]))
            if i1 - i0 + 1 > max_symbols:  # keep the most likely window
                mid = int(np.argmax(pmf_all[k]))
                i0 = max(i0, mid - max_symbols // 2)
                i1 = i0 + max_symbols - 1
            pmf = pmf_all[k, i0:i1 + 1]
            escape = below[k, i0] + above[k, i1]
            freqs.append(quantize_pmf(np.append(pmf, escape), precision))
            los.append(int(values[i0]))
        self._store(los, freqs, precision)
        return self.tables()

    def _store(self, los: list[int], freqs: list[np.ndarray], precision: int) -> None:
        size = max((len(f) for f in freqs), default=0)
        table = np.zeros((len(freqs), size), dtype=np.int64)
        for k, f in enumerate(freqs):
            table[k, :len(f)] = f
        self.table_lo = torch.tensor(los, dtype=torch.int64)
        self.table_freq = torch.from_numpy(table)
        self.table_size = torch.tensor([len(f) for f in freqs], dtype=torch.int64)
        self.table_precision = torch.tensor(precision, dtype=torch.int64)

    @property
    def frozen(self) -> bool:
        """Whether integer tables have been computed (or loaded)."""
        return self.table_size.numel() == self.channels and self.channels > 0

    def tables(self) -> FrozenTables:
        """The stored integer tables; raises ``RuntimeError`` before ``freeze``."""
        if not self.frozen:
            raise RuntimeError("entropy model not frozen: call freeze() first")
        freq = self.table_freq.numpy()
        sizes = self.table_size.tolist()
        return FrozenTables(
            precision=int(self.table_precision),
            lo=tuple(int(v) for v in self.table_lo.tolist()),
            freqs=tuple(freq[k, :sizes[k]].copy() for k in range(self.channels)),
        )

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # Tables change shape when frozen: resize the buffers to what is being loaded.
        for name in ("table_lo", "table_freq", "table_size"):
            key = prefix + name
            if key in state_dict:
                setattr(self, name, torch.zeros_like(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
