"""LineRWKV predictive codec (``linerwkv``): lossless and near-lossless coding with a trained
LineRWKV predictor and one of two residual coders.

Encoder (the decoder mirrors every step, band-line by band-line)
    1. Near-lossless pre-quantisation: ``q = 2 delta + 1``, ``x_q = floor((x + delta) / q)``;
       the decoder outputs ``q x_q`` clipped to ``2**bit_depth - 1``, so every sample is
       within ``delta`` of the original (``delta = 0`` is lossless).
    2. Per band, the mean and standard deviation of ``x_q`` in 1/16 units (integers sent as
       side information; the deviation is at least 1/16). The network input is
       ``(x_q - mean) / std`` and its output is de-normalised as ``p * std + mean``, all in
       float32 from the transmitted integers, so both sides use the same numbers.
    3. Row 0: band 0 is predicted by its rounded mean, band ``i > 0`` by band ``i - 1`` of
       row 0 shifted by the difference of the two means (integer arithmetic).
    4. Rows ``t >= 1``: LineRWKV predictions from :mod:`hsicomp.models.kernel`, rounded to the
       nearest integer (ties up) and clamped to ``[0, max_q]``.
    5. Residuals ``e = x_q - p`` are coded in BIL order (row, band, column) by ``arith``
       (:mod:`hsicomp.entropy.adaptive`) or ``sample-adaptive`` (the CCSDS-123
       sample-adaptive Golomb-power-of-2 coder with the LineRWKV parameters,
       :mod:`hsicomp.entropy.golomb`, on residuals mapped to ``0..max_q`` by the CCSDS-123
       folding around the prediction; ``ccsds`` is its old name, still accepted).

Encoder and decoder agreement
    The kernel computes every prediction with a fixed sequence of IEEE float32 operations, so
    the encoder (all rows at once) and the decoder (band by band) get the same bits, on any
    machine; de-normalisation and rounding are compiled the same way. A prediction near a
    rounding boundary therefore rounds the same way on both sides and needs no flag. The
    file records the kernel's arithmetic version and the sha256 of the weights; a decoder
    with other arithmetic or another model refuses the file.

Side information (inside the .hsic container)
    ``u8`` layout version, ``u8`` kernel arithmetic version, ``u8`` coder (0 arith,
    1 sample-adaptive), 32 bytes sha256 of the model weights, then per band the varints
    ``16 mean`` and ``16 std``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from hsicomp.codecs.base import Codec, Training, register
from hsicomp.entropy import golomb
from hsicomp.entropy.adaptive import ResidualDecoder, ResidualEncoder
from hsicomp.errors import HsicompError
from hsicomp.io.container import decode_varints, encode_varints

LAYOUT_VERSION = 1
#: Residual coders; a file's coder byte is the index.
CODERS = ("arith", "sample-adaptive")
#: Old coder names, accepted as the ``coder`` parameter.
CODER_ALIASES = {"ccsds": "sample-adaptive"}
#: Fixed-point scale of the transmitted band statistics.
STAT_SCALE = 16
_HASH_BYTES = 32
_FIXED_SIDE = 3 + _HASH_BYTES

_jit = njit(cache=True, error_model="numpy", nogil=True)


# --------------------------------------------------------------------------- arithmetic


@_jit
def _normalise(xq, mean, std, out):
    """out[k] = (float32(xq[k]) - mean) / std, in float32."""
    for k in range(xq.size):
        out[k] = (np.float32(xq[k]) - mean) / std


@_jit
def _round_predictions(pn, mean, std, max_q, out):
    """De-normalise float32 predictions, round (ties up) and clamp into ``out`` (int64).

    Returns how many de-normalised predictions lie within 0.001 of a rounding boundary
    (those a float mismatch between encoder and decoder could round differently).
    """
    near = 0
    top = np.float64(max_q)
    for k in range(pn.size):
        p = np.float64(pn[k] * std + mean)  # float32 product and sum, widened exactly
        if np.isnan(p) or p <= 0.0:
            out[k] = 0
            continue
        if p >= top:
            out[k] = max_q
            continue
        low = np.floor(p)
        if abs(p - low - 0.5) < 0.001:
            near += 1
        out[k] = np.int64(np.floor(p + 0.5))
    return near


@_jit
def _row0_prediction(prev, mean_shift, max_q, out):
    """Row 0 of band i > 0: band i - 1 shifted by the rounded difference of the means."""
    for k in range(prev.size):
        v = prev[k] + mean_shift
        out[k] = 0 if v < 0 else (max_q if v > max_q else v)


@_jit
def _fold(res, pred, max_q, out):
    """CCSDS-123 mapping of residuals to 0..max_q given their predictions."""
    for k in range(res.size):
        e, p = res[k], pred[k]
        theta = min(p, max_q - p)
        if abs(e) > theta:
            out[k] = abs(e) + theta
        elif e >= 0:
            out[k] = 2 * e
        else:
            out[k] = -2 * e - 1


@_jit
def _unfold(mapped, pred, max_q, out):
    """Inverse of :func:`_fold`; returns False when a value cannot come from a residual."""
    for k in range(mapped.size):
        m, p = np.int64(mapped[k]), pred[k]
        theta = min(p, max_q - p)
        if m > 2 * theta:
            e = m - theta if theta == p else theta - m
        elif m % 2 == 0:
            e = m // 2
        else:
            e = -(m + 1) // 2
        v = p + e
        if v < 0 or v > max_q:
            return False
        out[k] = e
    return True


# --------------------------------------------------------------------------- helpers


def _load_predictor(path: str) -> tuple[Any, bytes]:
    """Kernel weights and weight hash of a model file."""
    from hsicomp.models.checkpoint import load_model, model_hash
    from hsicomp.models.kernel import KernelWeights

    model, _ = load_model(path)
    try:
        weights = KernelWeights.from_model(model)
    except ValueError as exc:
        raise HsicompError(f"{path}: {exc}") from None
    return weights, bytes.fromhex(model_hash(model))


def _dequantise(xq: np.ndarray, q: int, bit_depth: int) -> np.ndarray:
    """The decoder's output of pre-quantised samples: ``q * xq`` clipped to the bit depth."""
    return np.minimum(xq.astype(np.int64) * q, (1 << bit_depth) - 1).astype(np.uint16)


def band_statistics(xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band ``round(16 mean)`` and ``max(1, round(16 std))`` of an integer cube."""
    flat = xq.reshape(xq.shape[0], -1).astype(np.float64)
    mean16 = np.rint(flat.mean(axis=1) * STAT_SCALE).astype(np.int64)
    std16 = np.maximum(1, np.rint(flat.std(axis=1) * STAT_SCALE)).astype(np.int64)
    return mean16, std16


class _Stats:
    """Per band float32 normalisation constants and row-0 shifts from the integer statistics."""

    def __init__(self, mean16: np.ndarray, std16: np.ndarray) -> None:
        scale = np.float32(STAT_SCALE)
        self.mean = [np.float32(m) / scale for m in mean16.tolist()]
        self.std = [np.float32(s) / scale for s in std16.tolist()]
        self.first = (int(mean16[0]) + STAT_SCALE // 2) // STAT_SCALE
        diff = np.diff(mean16, prepend=mean16[:1])
        self.shift = [(int(d) + STAT_SCALE // 2) // STAT_SCALE for d in diff.tolist()]


class _GolombLines:
    """Band-line access to a decoded CCSDS stream, with the ResidualDecoder interface."""

    def __init__(self, mapped: np.ndarray, max_q: int) -> None:
        self.mapped = mapped
        self.max_q = max_q
        self.bands = mapped.shape[0]
        self.line = 0

    def decode_line(self, pred: np.ndarray) -> np.ndarray:
        t, i = divmod(self.line, self.bands)
        self.line += 1
        res = np.empty(pred.size, dtype=np.int64)
        if not _unfold(self.mapped[i, t], pred, self.max_q, res):
            raise ValueError("decoded residual outside its range")
        return res


# --------------------------------------------------------------------------- codec


@register
class LineRWKVCodec(Codec):
    """LineRWKV predictive coding: network predictions, residuals range- or Golomb-coded.

    See the module docstring for the method and the file layout.

    Parameters: ``model`` (path of an hsicomp model file, needed to encode and decode),
    ``coder`` (``arith`` or ``sample-adaptive``, old name ``ccsds``; encoder only) and
    ``threads`` (encoder prediction threads; 0 = every CPU this process may use).
    """

    name = "linerwkv"
    defaults: ClassVar[dict[str, Any]] = {"model": "", "coder": "arith", "threads": 0}
    training = Training.LINERWKV

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        coder = self.params["coder"]
        self.params["coder"] = CODER_ALIASES.get(coder, coder)
        if self.params["coder"] not in CODERS:
            raise HsicompError(f"codec 'linerwkv': coder must be one of {', '.join(CODERS)}, "
                               f"got {self.params['coder']!r}")
        if int(self.params["threads"]) < 0:
            raise HsicompError(f"codec {self.name!r}: threads must be >= 0 (0 = every CPU)")
        #: Statistics of the last encode: predicted samples, how many lay within 0.001 of a
        #: rounding boundary, ``band_bits`` (payload bits of every band: arith, the growth of
        #: the range coder's output in 32-bit words while coding the band's lines;
        #: sample-adaptive, the exact codeword bits), and with ``track_ideal`` the payload's
        #: ideal code length in bits under the coder's own model (``ideal_bits``).
        self.last_stats: dict[str, Any] = {}
        self.track_ideal = False

    # ---- model

    def _predictor(self) -> tuple[Any, bytes]:
        path = str(self.params["model"])
        if not path:
            raise HsicompError("codec 'linerwkv' needs a model file (--model PATH or "
                               "param model=PATH)")
        from hsicomp.models.cache import load_cached

        return load_cached(path, _load_predictor)

    def _threads(self) -> int | None:
        threads = int(self.params["threads"])
        return threads if threads > 0 else None

    # ---- encoder

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Predict and code a cube; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        weights, digest = self._predictor()
        delta, q = int(delta), 2 * int(delta) + 1
        xq = (cube.astype(np.int64) + delta) // q
        max_q = ((1 << int(bit_depth)) - 1 + delta) // q
        mean16, std16 = band_statistics(xq)
        coder_id = CODERS.index(self.params["coder"])
        side = bytes([LAYOUT_VERSION, _arithmetic_version(), coder_id]) + digest \
            + encode_varints(v for pair in zip(mean16.tolist(), std16.tolist(), strict=True)
                             for v in pair)
        payload = b""
        self.last_stats = {"predicted": 0, "near_half": 0,
                           "band_bits": np.zeros(cube.shape[0], np.int64)}
        if max_q > 0:
            pred = self._predictions(weights, xq, _Stats(mean16, std16), max_q)
            res = xq - pred
            band_bits = np.zeros(xq.shape[0], np.int64)
            if coder_id == 0:
                enc = ResidualEncoder(xq.shape, max_q, track_ideal=self.track_ideal)
                last = enc.num_bits()
                for t in range(xq.shape[1]):
                    for i in range(xq.shape[0]):
                        enc.encode_line(res[i, t], pred[i, t])
                        now = enc.num_bits()
                        band_bits[i] += now - last
                        last = now
                payload = enc.finish()
                ideal = enc.ideal_bits
            else:
                mapped = np.empty(xq.shape, dtype=np.int64)
                _fold(res.reshape(-1), pred.reshape(-1), max_q, mapped.reshape(-1))
                payload, band_bits = golomb.encode_bands(mapped, order="bil")
                ideal = golomb.bit_count(mapped, order="bil") if self.track_ideal else 0.0
            self.last_stats["band_bits"] = band_bits
            if self.track_ideal:
                self.last_stats["ideal_bits"] = float(ideal)
        header = self.make_header(cube, delta, bit_depth, band_list)
        return self.pack(header, side, payload, [_dequantise(xq, q, bit_depth)])

    def _predictions(self, weights: Any, xq: np.ndarray, stats: _Stats,
                     max_q: int) -> np.ndarray:
        """Integer predictions of every sample (what the decoder will compute)."""
        from hsicomp.models.kernel import predict_cube

        bands, rows, cols = xq.shape
        pred = np.empty(xq.shape, dtype=np.int64)
        pred[0, 0] = min(max(stats.first, 0), max_q)
        for i in range(1, bands):
            _row0_prediction(xq[i - 1, 0], stats.shift[i], max_q, pred[i, 0])
        if rows == 1:
            return pred
        xn = np.empty(xq.shape, dtype=np.float32)
        for i in range(bands):
            _normalise(xq[i].reshape(-1), stats.mean[i], stats.std[i], xn[i].reshape(-1))
        pn = predict_cube(weights, xn, threads=self._threads())
        near = 0
        for i in range(bands):
            body = np.empty((rows - 1) * cols, dtype=np.int64)
            near += _round_predictions(pn[i].reshape(-1), stats.mean[i], stats.std[i], max_q,
                                       body)
            pred[i, 1:] = body.reshape(rows - 1, cols)
        self.last_stats = {"predicted": bands * (rows - 1) * cols, "near_half": int(near)}
        return pred

    # ---- decoder

    def _model_for(self, digest: bytes, source: str) -> Any:
        """The predictor's weights, checked to be those of the model that coded ``source``."""
        return self.coding_model("LineRWKV", digest, self._predictor, source)

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec (needs the same model file)."""
        header, side, payload = self.read_container(data, source)
        bands, rows, cols = header.shape
        coder_id, digest, mean16, std16 = self._read_side(side, bands, source)
        q = 2 * header.delta + 1
        max_q = ((1 << header.bit_depth) - 1 + header.delta) // q
        xq = np.zeros(header.shape, dtype=np.int64)
        if max_q > 0:
            weights = self._model_for(digest, source)
            try:
                lines = self._residual_source(coder_id, payload, header.shape, max_q)
                self._reconstruct(weights, lines, _Stats(mean16, std16), max_q, xq)
            except ValueError as exc:
                raise HsicompError(f"{source}: corrupt payload ({exc})") from None
        elif payload:
            raise HsicompError(f"{source}: corrupt payload (data where none is expected)")
        return self.check_output(_dequantise(xq, q, header.bit_depth), header, source)

    def _read_side(self, side: bytes, bands: int,
                   source: str) -> tuple[int, bytes, np.ndarray, np.ndarray]:
        if len(side) < _FIXED_SIDE:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
        if side[0] != LAYOUT_VERSION:
            raise HsicompError(f"{source}: unsupported linerwkv layout version {side[0]}")
        if side[1] != _arithmetic_version():
            raise HsicompError(f"{source}: coded with prediction arithmetic version {side[1]}, "
                               f"this hsicomp has version {_arithmetic_version()}")
        if side[2] >= len(CODERS):
            raise HsicompError(f"{source}: unknown residual coder {side[2]}")
        digest = side[3:_FIXED_SIDE]
        values = decode_varints(side[_FIXED_SIDE:], 2 * bands, source, "band statistics")
        stats = np.asarray(values, dtype=np.int64).reshape(bands, 2)
        mean16, std16 = stats[:, 0], stats[:, 1]
        if (std16 < 1).any() or (mean16 > 65535 * STAT_SCALE).any() \
                or (std16 > 65535 * STAT_SCALE).any():
            raise HsicompError(f"{source}: corrupt side info (band statistics out of range)")
        return side[2], digest, mean16, std16

    @staticmethod
    def _residual_source(coder_id: int, payload: bytes, shape: tuple[int, int, int],
                         max_q: int) -> ResidualDecoder | _GolombLines:
        if coder_id == 0:
            return ResidualDecoder(payload, shape, max_q)
        return _GolombLines(golomb.decode(payload, shape, order="bil").astype(np.int64), max_q)

    @staticmethod
    def _reconstruct(weights: Any, lines: ResidualDecoder | _GolombLines, stats: _Stats,
                     max_q: int, xq: np.ndarray) -> None:
        """Decode every band-line into ``xq`` (int64), predicting as the encoder did."""
        from hsicomp.models.kernel import KernelStepper

        bands, rows, cols = xq.shape
        pred = np.empty(cols, dtype=np.int64)
        pred[:] = min(max(stats.first, 0), max_q)
        xq[0, 0] = pred + lines.decode_line(pred)
        for i in range(1, bands):
            _row0_prediction(xq[i - 1, 0], stats.shift[i], max_q, pred)
            xq[i, 0] = pred + lines.decode_line(pred)
        if rows == 1:
            return
        xn = np.empty((bands, cols), dtype=np.float32)
        for i in range(bands):
            _normalise(xq[i, 0], stats.mean[i], stats.std[i], xn[i])
        stepper = KernelStepper(weights)
        stepper.start(xn)
        pn = np.empty(cols, dtype=np.float32)
        line = np.empty(cols, dtype=np.float32)
        for t in range(1, rows):
            stepper.begin_line()
            for i in range(bands):
                stepper.predict_band(i, pn)
                _round_predictions(pn, stats.mean[i], stats.std[i], max_q, pred)
                row = xq[i, t]
                np.add(pred, lines.decode_line(pred), out=row)
                _normalise(row, stats.mean[i], stats.std[i], line)
                stepper.push_band(i, line)

    @classmethod
    def describe_side_info(cls, side: bytes) -> list[tuple[str, str]]:
        """Readable fields of a linerwkv file's side info (for ``hsicomp info``)."""
        if len(side) < _FIXED_SIDE:
            return [("side_info", "corrupt")]
        coder = CODERS[side[2]] if side[2] < len(CODERS) else f"unknown ({side[2]})"
        return [("coder", coder), ("kernel_arithmetic", str(side[1])),
                ("model_sha256", side[3:_FIXED_SIDE].hex())]


def _arithmetic_version() -> int:
    from hsicomp.models.kernel import ARITHMETIC_VERSION

    return ARITHMETIC_VERSION
