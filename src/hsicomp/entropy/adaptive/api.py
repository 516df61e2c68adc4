"""Public API: streaming coders and whole-cube functions, and the checks of their arguments."""

from __future__ import annotations

import numpy as np

from hsicomp.entropy.adaptive.constants import (
    _BAD_PREDICTION,
    _DECODE_ERRORS,
    _HEADER,
    _LEFTOVER,
    _OK,
    _VERSION,
)
from hsicomp.entropy.adaptive.memory import (
    _M_IDEAL,
    _M_RC,
    _decode_cube,
    _decode_next,
    _encode_cube,
    _encode_next,
    _memory,
)
from hsicomp.entropy.rangecoder import D_SLOTS, E_NINV, E_POS, E_SLOTS, decoder_start, seal


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(f"expected a (bands, rows, cols) shape, got {tuple(shape)}")
    dims = tuple(int(s) for s in shape)
    if min(dims) < 1:
        raise ValueError(f"every dimension must be >= 1, got shape {dims}")
    return dims  # type: ignore[return-value]


def _check_max_value(max_value: int) -> int:
    if isinstance(max_value, bool) or not isinstance(max_value, int | np.integer):
        raise ValueError(f"max_value must be an integer, got {max_value!r}")
    if not 1 <= int(max_value) <= 0xFFFF:
        raise ValueError(f"max_value must be in [1, 65535], got {max_value}")
    return int(max_value)


_INT64 = np.dtype(np.int64)


def _as_line(name: str, values: np.ndarray, ncol: int) -> np.ndarray:
    """values as a contiguous int64 array of shape (ncol,)."""
    if (
        type(values) is np.ndarray
        and values.dtype is _INT64
        and values.shape == (ncol,)
        and values.flags.c_contiguous
    ):
        return values
    arr = np.asarray(values)
    if arr.shape != (ncol,):
        raise ValueError(f"{name} must have shape ({ncol},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _stream(words: np.ndarray) -> bytes:
    head = bytes([_VERSION]) + int(words.size).to_bytes(4, "little")
    return head + words.astype("<u4", copy=False).tobytes()


def _range_error(p: int, e: int, where: str, max_value: int) -> ValueError:
    if not 0 <= p <= max_value:
        return ValueError(f"prediction {p} at {where} is outside [0, max_value]")
    return ValueError(f"residual {e} at {where} is outside [-p, max_value - p] (p={p})")


class ResidualEncoder:
    """Streaming encoder: call ``encode_line`` for every band-line in BIL order, then ``finish``.

    ``shape`` is (bands, rows, cols); ``max_value`` (1..65535) bounds the samples, so a
    residual with prediction p must lie in [-p, max_value - p].
    """

    def __init__(self, shape: tuple[int, int, int], max_value: int,
                 track_ideal: bool = False) -> None:
        shape = _check_shape(shape)
        self._max_value = _check_max_value(max_value)
        self._ncol = shape[2]
        self._nlines = shape[0] * shape[1]
        self._line = 0
        self._mem = _memory(shape, self._max_value, track_ideal=track_ideal)
        self._track = track_ideal
        self._out = np.empty(64 * self._ncol + 64, dtype=np.uint32)
        self._words = 0  # of the stream if it were sealed now

    @property
    def ideal_bits(self) -> float:
        """With ``track_ideal``: the information content in bits of everything coded so far
        under the model's own probabilities (the length an ideal entropy coder would reach);
        0.0 without."""
        return float(self._mem[_M_IDEAL:_M_IDEAL + 1].view(np.float64)[0]) if self._track \
            else 0.0

    def _reserve(self, need: int) -> None:
        if need > self._out.size:
            grown = np.empty(max(2 * self._out.size, need), dtype=np.uint32)
            pos = int(self._mem[_M_RC + E_POS])
            grown[:pos] = self._out[:pos]
            self._out = grown

    def encode_line(self, residuals: np.ndarray, predictions: np.ndarray) -> None:
        """Encode the C residuals of the next band-line given their predictions."""
        ncol = self._ncol
        res = _as_line("residuals", residuals, ncol)
        pred = _as_line("predictions", predictions, ncol)
        if self._line >= self._nlines:
            raise ValueError(f"all {self._nlines} band-lines of the cube are already coded")
        if self._words + 2 * ncol > self._out.size:
            self._reserve(self._words + 2 * ncol)
        n = _encode_next(res, pred, self._mem, self._out)
        if n < 0:
            c = -1 - n
            raise _range_error(int(pred[c]), int(res[c]), f"column {c}", self._max_value)
        self._line += 1
        self._words = n

    def num_bits(self) -> int:
        """Size of the stream so far in bits without its 5-byte header: 32 per word, the
        closing words included (as constriction's ``RangeEncoder.num_bits``)."""
        return 32 * self._words

    def finish(self) -> bytes:
        """Return the coded stream; every band-line must have been encoded."""
        if self._line != self._nlines:
            raise ValueError(f"only {self._line} of {self._nlines} band-lines were encoded")
        rc = self._mem[_M_RC:_M_RC + E_SLOTS].view(np.uint64)
        self._reserve(int(rc[E_POS] + rc[E_NINV]) + 2)
        return _stream(self._out[: seal(rc, self._out)])


class ResidualDecoder:
    """Streaming decoder of a ``ResidualEncoder`` stream, one band-line per ``decode_line``.

    ``shape`` and ``max_value`` must be those given to the encoder. Raises ValueError on
    truncated or corrupt data (detected at the latest with the last band-line).
    """

    def __init__(self, data: bytes, shape: tuple[int, int, int], max_value: int) -> None:
        shape = _check_shape(shape)
        self._ncol = shape[2]
        self._nlines = shape[0] * shape[1]
        self._line = 0
        self._mem = _memory(shape, _check_max_value(max_value), decoder=True)
        buf = bytes(data)
        if len(buf) < _HEADER:
            raise ValueError(f"stream too short: {len(buf)} bytes")
        if buf[0] != _VERSION:
            raise ValueError(f"unsupported stream version {buf[0]}: this decoder reads "
                             f"version {_VERSION} only")
        nwords = int.from_bytes(buf[1:_HEADER], "little")
        if len(buf) != _HEADER + 4 * nwords:
            raise ValueError(
                f"stream truncated or padded: header announces {nwords} words "
                f"({_HEADER + 4 * nwords} bytes), got {len(buf)} bytes"
            )
        self._words = np.frombuffer(buf, dtype="<u4", offset=_HEADER).astype(np.uint32)
        decoder_start(self._words, self._mem[_M_RC:_M_RC + D_SLOTS].view(np.uint64))
        self._failed = False

    def decode_line(self, predictions: np.ndarray) -> np.ndarray:
        """Decode the next band-line from its C predictions; returns the residuals (int64).

        A prediction outside [0, max_value] raises ValueError and decodes nothing; after a
        ValueError for corrupt data the decoder cannot go on.
        """
        pred = _as_line("predictions", predictions, self._ncol)
        if self._line >= self._nlines:
            raise ValueError(f"all {self._nlines} band-lines of the cube are already coded")
        if self._failed:
            raise ValueError("the decoder failed on an earlier band-line")
        res = np.empty(self._ncol, dtype=np.int64)
        status = _decode_next(pred, res, self._mem, self._words)
        if status != _OK:
            self._failed = status != _BAD_PREDICTION
            if status == _LEFTOVER:
                self._line += 1
            raise ValueError(_DECODE_ERRORS[status])
        self._line += 1
        return res


def _check_cube(name: str, values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a (bands, rows, cols) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def encode_cube(residuals: np.ndarray, predictions: np.ndarray, max_value: int) -> bytes:
    """Encode residuals (bands, rows, cols) with their predictions, in BIL order."""
    res = _check_cube("residuals", residuals)
    pred = _check_cube("predictions", predictions)
    if res.shape != pred.shape:
        raise ValueError(f"shape mismatch: residuals {res.shape}, predictions {pred.shape}")
    shape = _check_shape(res.shape)
    max_value = _check_max_value(max_value)
    out = np.empty(res.size // 8 + 2 * shape[2] + 64, dtype=np.uint32)
    out, n = _encode_cube(res, pred, _memory(shape, max_value), out)
    if n < 0:
        i, t, c = np.unravel_index(-1 - n, shape)
        raise _range_error(int(pred[i, t, c]), int(res[i, t, c]),
                           f"band {i}, row {t}, column {c}", max_value)
    return _stream(out[:n])


def decode_cube(data: bytes, predictions: np.ndarray, max_value: int) -> np.ndarray:
    """Decode ``encode_cube`` output; returns int32 residuals shaped like ``predictions``."""
    pred = _check_cube("predictions", predictions)
    dec = ResidualDecoder(data, pred.shape, max_value)
    out = np.empty(pred.shape, dtype=np.int32)
    status = _decode_cube(pred, out, dec._mem, dec._words)
    if status != _OK:
        raise ValueError(_DECODE_ERRORS[status])
    return out
