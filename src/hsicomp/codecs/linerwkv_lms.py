"""LineRWKV prediction refined by scene-adaptive linear prediction (``linerwkv-lms``).

The LineRWKV network is trained offline, on other images; the scene being coded is seen
only through its inputs. This codec puts an adaptive stage after it: the CCSDS-123.0-B-2
predictor (sign-algorithm weights per band, local sums, directional and previous-band
differences, :mod:`hsicomp.codecs.lms`) with the network's prediction as one more input.
Its weights start from the network alone (``ext_init = 8``) and adapt to the scene sample by
sample, taking from the network and from the neighbours whatever predicts this image best.

Near-lossless coding uses the CCSDS-123 in-loop quantizer instead of the pre-quantisation of
the ``linerwkv`` codec: the prediction keeps its full resolution and the quantizer bins are
centred on it, which is worth a lot at large ``delta``. The network therefore runs on the
reconstructed samples, band-line by band-line, on both sides (the recurrent form of
:class:`hsicomp.models.kernel.KernelStepper`); in lossless coding the reconstruction is the
input, so the encoder computes every network prediction at once (``predict_cube``, same bits).

Encoder (the decoder mirrors every step)
    1. Per band, the mean and standard deviation of the input in 1/16 units (side info);
       the network input is ``(x' - mean) / std`` of the reconstruction ``x'``, its output is
       de-normalised as ``p std + mean`` in float32 and rounded to quarter units
       (``ext4 = floor(4 p + 1/2)``, clamped to ``0..4 s_max``).
    2. Row 0 of every band uses the CCSDS-123 predictor alone; rows ``t >= 1`` add
       ``ext4 - sigma`` to its local difference vector. With ``cascade`` > 0 (default 5) the
       second LMS stage of :mod:`hsicomp.codecs.lms` corrects that prediction from the
       first-stage residuals of nine coded neighbours (on every row).
    3. The quantizer indices are coded as by the ``ccsds123`` codec: ``arith`` (the
       context-adaptive range coder on the indices wrapped into their window) or
       ``sample-adaptive`` (the CCSDS-123 sample-adaptive Golomb-power-of-2 coder on the
       mapped indices), in BIL order.
       The decoder decodes every index first, then runs predictor and network.

Without the network (``network`` ``auto``, the default)
    The encoder also codes the cube with the same predictor and coder settings but no
    network input, which is exactly what ``ccsds123`` with those settings writes, and keeps
    the smaller file; such a file says so (``ext_init`` byte 255, no band statistics) and
    decodes without the model. Where the network does not pay (large ``delta`` on scenes
    unlike its training data) the codec is never worse than its own adaptive stage alone.

Side info (inside the .hsic container)
    ``u8`` layout version, ``u8`` kernel arithmetic version, 32 bytes sha256 of the model
    weights, ``u8`` ext_init (255: coded without the network), the 16 bytes of the
    ``ccsds123`` settings in its layout version 2 (coder, predictor and Golomb parameters,
    cascade), then, when the network was used, per band the varints ``16 mean`` and
    ``16 std``. Layout version 3; version 2 files (no ext_init 255) and version 1 files
    (15 bytes of settings in the ``ccsds123`` layout version 1, no second stage) are still
    read.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numba import njit

from hsicomp.codecs.base import register
from hsicomp.codecs.ccsds123 import Ccsds123Codec, _Settings
from hsicomp.codecs.linerwkv import (
    STAT_SCALE,
    LineRWKVCodec,
    _arithmetic_version,
    _normalise,
    _Stats,
    band_statistics,
)
from hsicomp.codecs.lms import C_INPUTS, code_line, code_rows
from hsicomp.errors import HsicompError
from hsicomp.io.container import decode_varints, encode_varints

#: Side-info layout: version 1 has 15-byte ccsds123 settings (no second stage), version 2
#: the 16-byte ones, version 3 adds ``ext_init`` NO_NETWORK (coded without the network).
LAYOUT_VERSION = 3
#: The ``ext_init`` byte of a file coded without the network (no band statistics follow).
NO_NETWORK = 0xFF
#: Values of the parameter ``network``.
NETWORK_CHOICES = ("auto", "on")
_HASH_BYTES = 32
_SETTINGS_BYTES = len(_Settings(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0).pack(2))
_FIXED_SIDE = 3 + _HASH_BYTES + _SETTINGS_BYTES
_LMS_KEYS = ("mode", "local_sum", "P", "omega", "register", "nu_min", "nu_max", "t_inc",
             "cascade")

_jit = njit(cache=True, error_model="numpy", nogil=True)


@_jit
def _quarter_predictions(pn, mean, std, s_max, out):
    """De-normalised float32 predictions in quarter units: ``floor(4 p + 1/2)``, clamped."""
    top = np.float64(4 * s_max)
    for k in range(pn.size):
        p = np.float64(pn[k] * std + mean) * 4.0  # float32 product and sum, then exact x4
        if np.isnan(p) or p <= 0.0:
            out[k] = 0
        elif p >= top:
            out[k] = 4 * s_max
        else:
            out[k] = np.int64(np.floor(p + 0.5))


class _Run:
    """Predictor state and settings of one encode or decode."""

    def __init__(self, settings: _Settings, ext_init: int, dbits: int, delta: int,
                 shape: tuple[int, int, int]) -> None:
        s = settings
        self.shape = shape
        self.dc = np.zeros(shape, np.int32)
        self.weights = np.zeros((shape[0], 4 + s.p_bands), np.int64)
        res1 = np.zeros(shape if s.cascade else (1, 1, 1), np.int32)
        w2 = np.zeros((shape[0], C_INPUTS), np.int64)
        self.args = (s.coder_id == 1, dbits, delta, s.mode == 0, s.local_sum, s.p_bands, s.omega,
                     s.register, s.nu_min, s.nu_max, s.t_inc, ext_init, s.cascade, res1, w2)

    def line(self, z: int, y: int, src: np.ndarray, codes: np.ndarray, rec: np.ndarray,
             ext4: np.ndarray, n_ext: int, decode: bool) -> int:
        """Code one band-line; -1 or the flat index of an impossible code."""
        bad = code_line(z, y, src, codes, rec, self.dc, self.weights, ext4, n_ext, decode,
                        *self.args)
        return -1 if bad < 0 else (z * self.shape[1] + y) * self.shape[2] + bad

    def rows(self, ext4: np.ndarray, src: np.ndarray, codes: np.ndarray, rec: np.ndarray,
             decode: bool) -> int:
        """Code rows 1.. with all external predictions known."""
        return int(code_rows(ext4, src, codes, rec, self.dc, self.weights, decode, *self.args))


@register
class LineRWKVLmsCodec(LineRWKVCodec):
    """LineRWKV prediction refined by a CCSDS-123 sign-LMS stage with in-loop quantization.

    See the module docstring for the method and the file layout.

    Parameters: ``model``, ``coder`` (``arith`` or ``sample-adaptive``), ``threads`` as for
    ``linerwkv``; ``ext_init`` (0..8, the network's initial weight in eighths); the
    predictor parameters of ``ccsds123`` (``mode``, ``local_sum``, ``P``, ``omega``,
    ``register``, ``nu_min``, ``nu_max``, ``t_inc``, same defaults; ``cascade``, default 5:
    the second stage with weight step ``2**-5``, 0 turns it off); ``network``: ``auto``
    (default: the cube is also coded without the network, as ``ccsds123`` with the same
    predictor settings would code it, and the smaller file is kept) or ``on``.
    """

    name = "linerwkv-lms"
    defaults: ClassVar[dict[str, Any]] = {
        **LineRWKVCodec.defaults, "ext_init": 8,
        **{k: Ccsds123Codec.defaults[k] for k in _LMS_KEYS}, "cascade": 5, "network": "auto",
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        ext_init = self.params["ext_init"]
        if isinstance(ext_init, bool) or not isinstance(ext_init, int | np.integer) \
                or not 0 <= ext_init <= 8:
            raise HsicompError(f"codec '{self.name}': ext_init must be an integer in 0..8, "
                               f"got {ext_init!r}")
        if self.params["network"] not in NETWORK_CHOICES:
            raise HsicompError(f"codec '{self.name}': network must be one of "
                               f"{', '.join(NETWORK_CHOICES)}, got {self.params['network']!r}")
        self._ccsds = Ccsds123Codec(coder=self.params["coder"],
                                    **{k: self.params[k] for k in _LMS_KEYS})
        self.last_stats = {}

    # ---- encoder

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Predict, quantize and code a cube; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        weights, digest = self._predictor()
        dbits, delta = int(bit_depth), int(delta)
        settings = self._ccsds._settings(dbits)
        ext_init = int(self.params["ext_init"])
        mean16, std16 = band_statistics(cube)
        codes = np.empty(cube.shape, np.int32)
        rec = np.empty(cube.shape, np.int32)
        run = _Run(settings, ext_init, dbits, delta, cube.shape)
        known = self._lossless_predictions(weights, cube, _Stats(mean16, std16), dbits) \
            if delta == 0 else None
        self._code(weights, run, _Stats(mean16, std16), cube, codes, rec, False, known)
        payload, band_bits = self._ccsds._entropy_encode(settings, codes, dbits)
        side = self._side(digest, ext_init, settings) \
            + encode_varints(v for pair in zip(mean16.tolist(), std16.tolist(), strict=True)
                             for v in pair)
        header = self.make_header(cube, delta, bit_depth, band_list)
        self.last_stats = {"band_bits": band_bits, "network": True}
        data = self.pack(header, side, payload, [rec.astype(np.uint16)])
        if self.params["network"] == "auto":
            # the same predictor without the network input: the standard one, bit for bit
            settings.run(cube, codes, rec, False, dbits, delta)
            payload, band_bits = self._ccsds._entropy_encode(settings, codes, dbits)
            plain = self.pack(header, self._side(digest, NO_NETWORK, settings), payload,
                              [rec.astype(np.uint16)])
            if len(plain) < len(data):
                self.last_stats = {"band_bits": band_bits, "network": False}
                return plain
        return data

    @staticmethod
    def _side(digest: bytes, ext_init: int, settings: _Settings) -> bytes:
        """The fixed part of the side info (band statistics follow when the network runs)."""
        return bytes([LAYOUT_VERSION, _arithmetic_version()]) + digest + bytes([ext_init]) \
            + settings.pack(2)

    def _lossless_predictions(self, weights: Any, cube: np.ndarray, stats: _Stats,
                              dbits: int) -> np.ndarray | None:
        """Quarter-unit network predictions of rows 1.. of a cube coded losslessly."""
        from hsicomp.models.kernel import predict_cube

        bands, rows, cols = cube.shape
        if rows == 1:
            return None
        xn = np.empty(cube.shape, dtype=np.float32)
        for i in range(bands):
            _normalise(cube[i].reshape(-1), stats.mean[i], stats.std[i], xn[i].reshape(-1))
        pn = predict_cube(weights, xn, threads=self._threads())
        ext4 = np.empty(pn.shape, np.int64)
        s_max = (1 << dbits) - 1
        for i in range(bands):
            _quarter_predictions(pn[i].reshape(-1), stats.mean[i], stats.std[i], s_max,
                                 ext4[i].reshape(-1))
        return ext4

    # ---- shared by both sides

    @staticmethod
    def _code(weights: Any, run: _Run, stats: _Stats, src: np.ndarray, codes: np.ndarray,
              rec: np.ndarray, decode: bool, known: np.ndarray | None = None) -> int:
        """Code every band-line (BIL); -1 or the flat index of the first impossible code."""
        from hsicomp.models.kernel import KernelStepper

        bands, rows, cols = rec.shape
        dbits = run.args[1]
        ext4 = np.zeros(cols, np.int64)
        for z in range(bands):
            bad = run.line(z, 0, src, codes, rec, ext4, 0, decode)
            if bad >= 0:
                return bad
        if rows == 1:
            return -1
        if known is not None:
            return run.rows(known, src, codes, rec, decode)
        xn = np.empty((bands, cols), dtype=np.float32)
        for i in range(bands):
            _normalise(rec[i, 0], stats.mean[i], stats.std[i], xn[i])
        stepper = KernelStepper(weights)
        stepper.start(xn)
        pn = np.empty(cols, dtype=np.float32)
        line = np.empty(cols, dtype=np.float32)
        s_max = (1 << dbits) - 1
        for t in range(1, rows):
            stepper.begin_line()
            for i in range(bands):
                stepper.predict_band(i, pn)
                _quarter_predictions(pn, stats.mean[i], stats.std[i], s_max, ext4)
                bad = run.line(i, t, src, codes, rec, ext4, 1, decode)
                if bad >= 0:
                    return bad
                _normalise(rec[i, t], stats.mean[i], stats.std[i], line)
                stepper.push_band(i, line)
        return -1

    # ---- decoder

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec (needs the same model file, unless the
        file was coded without the network)."""
        header, side, payload = self.read_container(data, source)
        bands, rows, cols = header.shape
        dbits = header.bit_depth
        digest, ext_init, settings, mean16, std16 = self._read_side(side, bands, dbits, source)
        weights = self._model_for(digest, source) if ext_init != NO_NETWORK else None
        try:
            codes = Ccsds123Codec._entropy_decode(settings, payload, header.shape, dbits)
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt payload ({' '.join(str(exc).split())})") \
                from None
        rec = np.empty(header.shape, np.int32)
        if weights is None:
            bad = settings.run(np.zeros((1, 1, 1), np.uint16), codes, rec, True, dbits,
                               header.delta)
        else:
            run = _Run(settings, ext_init, dbits, header.delta, header.shape)
            bad = self._code(weights, run, _Stats(mean16, std16),
                             np.zeros((1, 1, 1), np.uint16), codes, rec, True)
        if bad >= 0:
            z, rest = divmod(bad, rows * cols)
            raise HsicompError(f"{source}: corrupt payload (impossible quantizer index at "
                               f"band {z}, row {rest // cols}, column {rest % cols})")
        return self.check_output(rec.astype(np.uint16), header, source)

    def _read_side(self, side: bytes, bands: int, dbits: int,
                   source: str) -> tuple[bytes, int, _Settings, np.ndarray, np.ndarray]:
        if len(side) < _FIXED_SIDE - 1:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
        if side[0] not in (1, 2, LAYOUT_VERSION):
            raise HsicompError(f"{source}: unsupported {self.name} layout version {side[0]}")
        fixed = _FIXED_SIDE - (side[0] == 1)
        if len(side) < fixed:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
        if side[1] != _arithmetic_version():
            raise HsicompError(f"{source}: coded with prediction arithmetic version {side[1]}, "
                               f"this hsicomp has version {_arithmetic_version()}")
        digest = side[2:2 + _HASH_BYTES]
        ext_init = side[2 + _HASH_BYTES]
        if ext_init > 8 and not (ext_init == NO_NETWORK and side[0] == LAYOUT_VERSION):
            raise HsicompError(f"{source}: corrupt side info (ext_init {ext_init})")
        settings = _Settings.unpack(side[3 + _HASH_BYTES:fixed], source)
        try:
            settings.validate(dbits)
        except HsicompError as exc:
            reason = str(exc).removeprefix("codec 'ccsds123': ")
            raise HsicompError(f"{source}: corrupt side info ({reason})") from None
        if ext_init == NO_NETWORK:
            if len(side) != fixed:
                raise HsicompError(f"{source}: corrupt side info ({len(side) - fixed} bytes "
                                   f"after the settings of a file coded without the network)")
            none = np.zeros(0, np.int64)
            return digest, ext_init, settings, none, none
        values = decode_varints(side[fixed:], 2 * bands, source, "band statistics")
        stats = np.asarray(values, dtype=np.int64).reshape(bands, 2)
        mean16, std16 = stats[:, 0], stats[:, 1]
        if (std16 < 1).any() or (mean16 > 65535 * STAT_SCALE).any() \
                or (std16 > 65535 * STAT_SCALE).any():
            raise HsicompError(f"{source}: corrupt side info (band statistics out of range)")
        return digest, ext_init, settings, mean16, std16

    @classmethod
    def describe_side_info(cls, side: bytes) -> list[tuple[str, str]]:
        """Readable fields of a linerwkv-lms file's side info (for ``hsicomp info``)."""
        if len(side) < _FIXED_SIDE - 1:
            return [("side_info", "corrupt")]
        ext_init = side[2 + _HASH_BYTES]
        fields = [("kernel_arithmetic", str(side[1])),
                  ("model_sha256", side[2:2 + _HASH_BYTES].hex()),
                  ("network", "not used (coded without it)" if ext_init == NO_NETWORK
                   else f"used, ext_init {ext_init}/8")]
        fixed = _FIXED_SIDE - (side[0] == 1)
        return fields + Ccsds123Codec.describe_side_info(side[3 + _HASH_BYTES:fixed])
