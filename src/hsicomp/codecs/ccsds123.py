"""CCSDS-123.0-B-2 predictive codec (``ccsds123``): lossless and near-lossless.

Predictor (CCSDS 123.0-B-2, section 4; the facts are summarised in the shared
``docs/ccsds123.md``)
    Adaptive linear prediction of every sample ``s_z(y, x)`` from a local sum ``sigma`` of
    already coded neighbours (four types: wide/narrow x neighbour/column oriented), the
    directional local differences ``dN, dW, dNW`` ("full" mode only) and the central local
    differences of the ``P* = min(z, P)`` previous bands. Weights have resolution ``Omega``,
    start from the standard's default values and follow the sign algorithm with the
    scaling exponent schedule ``nu_min, nu_max, t_inc``. The scaled prediction goes through
    ``mod*_R`` (a signed ``R``-bit register) and is clipped to the sample range.

    Quantizer: the in-loop uniform quantizer with an absolute error limit ``m = delta`` for
    every band (``delta = 0``: lossless); the sample representative is the clipped quantizer
    bin centre ``s'`` (damping and offset 0), so every reconstructed sample is within
    ``delta`` of the original. As in the standard, the first sample of every band
    (``t = 0``) is quantized losslessly (``q = s - s_hat``, ``theta`` without ``m``).
    The mapped quantizer index ``delta_z(t)`` is exactly the standard's.

    The dynamic range ``D`` of predictor and coder is the bit depth given to ``encode``
    (``s_min = 0``, ``s_max = 2**D - 1``, ``s_mid = 2**(D - 1)``). The anchor table of the
    project was measured with ``D = 16`` on EnMAP values below ``2**14``; pass
    ``bit_depth=16`` to reproduce it.

    Second stage (codec parameter ``cascade``, default 0 = off; an extension, not part of
    the standard): with ``cascade = k`` in 1..15 a sign-error LMS stage with weight step
    ``2**-k`` corrects the prediction from the residuals of nine coded neighbours
    (:mod:`hsicomp.codecs.lms` describes it exactly); the standard predictor runs unchanged
    underneath it.

    Edge conventions the standard leaves to images at least 2 columns wide: with a single
    column the neighbour-oriented local sums use ``4 N`` on rows ``y > 0``.

Integer ranges (every product fits in int64, no Python integers in the loops)
    ``|U_i| <= 4 s_max < 2**18`` (``D <= 16``), ``|W_i| <= 2**(Omega + 2) <= 2**21``, so each
    product is below ``2**39`` and ``dhat`` (at most 3 + 15 terms) below ``2**44``;
    ``2**Omega |sigma - 4 s_mid| <= 2**36``. The register argument is thus below ``2**45``:
    ``mod*_64`` is the identity and smaller registers (``R >= max(32, D + Omega + 2)``) are
    wrapped explicitly. The weight increment ``|U| 2**-rho`` with ``rho >= -24`` stays below
    ``2**42``.

Entropy coders (codec parameter ``coder``)
    ``sample-adaptive`` (default): the mapped indices are coded in BIL order by the
    CCSDS-123 sample-adaptive Golomb-power-of-2 coder (:mod:`hsicomp.entropy.golomb`) with
    ``dynamic_range = max(2, D)``, ``U_max = u_max`` (18), ``gamma0`` (1),
    ``K = min(k_init, dynamic_range - 2)`` (3) and ``gamma* = gamma_star`` (6).

    ``arith``: the context-adaptive range coder of :mod:`hsicomp.entropy.adaptive`, coding
    the signed quantizer index ``q``. Its decoder wants the predictions of a whole band-line
    before decoding it, but a CCSDS prediction depends on the samples to its left in the
    same line (local sum, sample-wise weight updates), so what it codes must not depend on
    the prediction: ``q`` lies in the window ``[-q_lo, q_hi]`` with
    ``q_lo = floor((s_hat + m)/(2m + 1))``, ``q_hi = floor((s_max - s_hat + m)/(2m + 1))``
    (``m = 0`` at ``t = 0``), i.e. ``N = q_lo + q_hi + 1 <= 2**D`` values; it is wrapped
    modulo ``N`` into ``[-floor(N/2), ceil(N/2) - 1]`` (a no-op unless the sample is near
    the ends of the range and far from its prediction) and coded with the constant
    "prediction" ``p = 2**(D - 1)`` and ``max_value = s_max = 2**D - 1``, so
    ``-p <= r <= s_max - p`` holds exactly for every sample, the clipped ones and the
    losslessly coded first samples included. The decoder decodes every residual first,
    then runs the predictor once over the cube and unwraps ``r`` with the window of each
    sample. (Coding ``q`` itself beat coding the mapped index, unfolded to a signed value,
    by 0.001 to 0.014 bits per sample on the EnMAP anchor crops: the coder's sign contexts
    use the real signs of the neighbours' residuals.)

Side information (inside the .hsic container), 15 bytes (layout version 1, no second stage)
or 16 bytes (layout version 2)
    ``u8`` layout version, ``u8`` coder (0 sample-adaptive, 1 arith), ``u8`` mode
    (0 full, 1 reduced), ``u8`` local sum (0 wide neighbour, 1 narrow neighbour,
    2 wide column, 3 narrow column), ``u8`` P, ``u8`` Omega, ``u8`` R, ``i8`` nu_min,
    ``i8`` nu_max, ``u16`` t_inc, ``u8`` U_max, ``u8`` gamma0, ``u8`` K (as used),
    ``u8`` gamma* (little endian), then in version 2 ``u8`` cascade (0..15). Files without
    the second stage are written as version 1, files with it as version 2. The decoder uses
    these values, never its own parameters.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

import numpy as np

from hsicomp.codecs.base import Codec, register
from hsicomp.codecs.lms import code_cube
from hsicomp.entropy import golomb
from hsicomp.entropy.adaptive import ResidualDecoder, ResidualEncoder
from hsicomp.errors import HsicompError

LAYOUT_VERSION = 1  # without the second stage; 2 with it (one more byte: cascade)
CODERS = ("sample-adaptive", "arith")
MODES = ("full", "reduced")
LOCAL_SUMS = ("wide_neighbour", "narrow_neighbour", "wide_column", "narrow_column")
_SIDE = struct.Struct("<BBBBBBBbbHBBBB")

# --------------------------------------------------------------------------- parameters


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise HsicompError(f"codec 'ccsds123': {name} must be in {low}..{high}, got {value}")


def _golomb_params(dbits: int, u_max: int, gamma0: int, k_init: int,
                   gamma_star: int) -> golomb.SampleAdaptiveParams:
    """Sample-adaptive coder parameters for predictor dynamic range ``dbits``."""
    dyn = max(2, dbits)
    return golomb.SampleAdaptiveParams(dynamic_range=dyn, u_max=u_max, gamma0=gamma0,
                                       k_init=min(k_init, dyn - 2), gamma_star=gamma_star)


class _Settings:
    """Every value the decoder needs, as stored in the side info."""

    def __init__(self, coder_id: int, mode: int, local_sum: int, p_bands: int, omega: int,
                 register: int, nu_min: int, nu_max: int, t_inc: int, u_max: int, gamma0: int,
                 k_init: int, gamma_star: int, cascade: int = 0) -> None:
        self.coder_id, self.mode, self.local_sum = coder_id, mode, local_sum
        self.p_bands, self.omega, self.register = p_bands, omega, register
        self.nu_min, self.nu_max, self.t_inc = nu_min, nu_max, t_inc
        self.u_max, self.gamma0, self.k_init, self.gamma_star = u_max, gamma0, k_init, gamma_star
        self.cascade = cascade

    def pack(self, version: int | None = None) -> bytes:
        """The side info in layout ``version`` (default: 1 without the second stage, else 2)."""
        if version is None:
            version = LAYOUT_VERSION if self.cascade == 0 else LAYOUT_VERSION + 1
        if version == LAYOUT_VERSION and self.cascade:
            raise ValueError("layout version 1 cannot store the second stage")
        fixed = _SIDE.pack(version, self.coder_id, self.mode, self.local_sum, self.p_bands,
                           self.omega, self.register, self.nu_min, self.nu_max, self.t_inc,
                           self.u_max, self.gamma0, self.k_init, self.gamma_star)
        return fixed if version == LAYOUT_VERSION else fixed + bytes([self.cascade])

    @classmethod
    def unpack(cls, side: bytes, source: str) -> _Settings:
        """Settings from side info of layout version 1 or 2."""
        size = _SIDE.size + (1 if side[:1] == bytes([LAYOUT_VERSION + 1]) else 0)
        if len(side) != size:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes, expected "
                               f"{size})")
        values = _SIDE.unpack(side[:_SIDE.size])
        if values[0] not in (LAYOUT_VERSION, LAYOUT_VERSION + 1):
            raise HsicompError(f"{source}: unsupported ccsds123 layout version {values[0]}")
        return cls(*values[1:], cascade=side[_SIDE.size] if size > _SIDE.size else 0)

    def validate(self, dbits: int) -> None:
        """Check every value (HsicompError naming the first one out of range)."""
        _check_range("coder", self.coder_id, 0, len(CODERS) - 1)
        _check_range("mode", self.mode, 0, len(MODES) - 1)
        _check_range("local_sum", self.local_sum, 0, len(LOCAL_SUMS) - 1)
        _check_range("P", self.p_bands, 0, 15)
        _check_range("omega", self.omega, 4, 19)
        _check_range("register", self.register, max(32, dbits + self.omega + 2), 64)
        _check_range("nu_min", self.nu_min, -6, 9)
        _check_range("nu_max", self.nu_max, self.nu_min, 9)
        _check_range("cascade", self.cascade, 0, 15)
        if self.t_inc not in {1 << k for k in range(4, 12)}:
            raise HsicompError(f"codec 'ccsds123': t_inc must be a power of two in "
                               f"16..2048, got {self.t_inc}")
        try:
            params = _golomb_params(dbits, self.u_max, self.gamma0, self.k_init,
                                    self.gamma_star)
        except ValueError as exc:
            raise HsicompError(f"codec 'ccsds123': {exc}") from None
        if params.k_init != self.k_init:
            raise HsicompError(f"codec 'ccsds123': k_init must be at most "
                               f"{params.dynamic_range - 2} for bit depth {dbits}")

    def golomb(self, dbits: int) -> golomb.SampleAdaptiveParams:
        return _golomb_params(dbits, self.u_max, self.gamma0, self.k_init, self.gamma_star)

    def run(self, src: np.ndarray, codes: np.ndarray, rec: np.ndarray, decode: bool,
            dbits: int, delta: int) -> int:
        return int(code_cube(src, codes, rec, decode, self.coder_id == 1, dbits, delta,
                             self.mode == 0, self.local_sum, self.p_bands, self.omega,
                             self.register, self.nu_min, self.nu_max, self.t_inc,
                             self.cascade))


# --------------------------------------------------------------------------- codec


@register
class Ccsds123Codec(Codec):
    """CCSDS-123.0-B-2: adaptive linear prediction + sample-adaptive Golomb or range coding.

    See the module docstring for the method and the file layout.

    Parameters (defaults: full prediction, P = 3, wide neighbour local sums, Omega = 19,
    R = 64, nu_min = -1, nu_max = 3, t_inc = 2**6; U_max = 18, gamma0 = 1, K = 3,
    gamma* = 6): ``coder``, ``mode``, ``local_sum``, ``P``, ``omega``, ``register``,
    ``nu_min``, ``nu_max``, ``t_inc``, ``u_max``, ``gamma0``, ``k_init``, ``gamma_star``;
    ``cascade`` (0 = the standard predictor, default; 1..15: the second stage with weight
    step ``2**-cascade``).
    """

    name = "ccsds123"
    defaults: ClassVar[dict[str, Any]] = {
        "coder": "sample-adaptive", "mode": "full", "local_sum": "wide_neighbour", "P": 3,
        "omega": 19, "register": 64, "nu_min": -1, "nu_max": 3, "t_inc": 64,
        "u_max": 18, "gamma0": 1, "k_init": 3, "gamma_star": 6, "cascade": 0,
    }

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        for key, choices in (("coder", CODERS), ("mode", MODES), ("local_sum", LOCAL_SUMS)):
            if p[key] not in choices:
                raise HsicompError(f"codec 'ccsds123': {key} must be one of "
                                   f"{', '.join(choices)}, got {p[key]!r}")
        for key in ("P", "omega", "register", "nu_min", "nu_max", "t_inc", "u_max", "gamma0",
                    "k_init", "gamma_star", "cascade"):
            if isinstance(p[key], bool) or not isinstance(p[key], int | np.integer):
                raise HsicompError(f"codec 'ccsds123': {key} must be an integer, "
                                   f"got {p[key]!r}")
            p[key] = int(p[key])
        # bit-depth independent checks now, the rest when the bit depth is known
        self._settings(16, check_register=False)
        #: Statistics of the last encode: ``band_bits``, the payload bits of every band
        #: (int64; sample-adaptive: exact codeword bits; arith: the growth of the range
        #: coder's output, in 32-bit words, while coding the band's lines).
        self.last_stats: dict[str, Any] = {}

    def _settings(self, dbits: int, check_register: bool = True) -> _Settings:
        p = self.params
        dyn = max(2, dbits)
        settings = _Settings(CODERS.index(p["coder"]), MODES.index(p["mode"]),
                             LOCAL_SUMS.index(p["local_sum"]), p["P"], p["omega"],
                             p["register"], p["nu_min"], p["nu_max"], p["t_inc"], p["u_max"],
                             p["gamma0"], min(p["k_init"], dyn - 2), p["gamma_star"],
                             p["cascade"])
        _check_range("k_init", p["k_init"], 0, 14)
        if not check_register:
            _check_range("register", p["register"], 32, 64)
            settings.register = 64
        settings.validate(dbits)
        return settings

    # ---- encoder

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Predict, quantize and code a cube; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        dbits, delta = int(bit_depth), int(delta)
        settings = self._settings(dbits)
        codes = np.empty(cube.shape, np.int32)
        rec = np.empty(cube.shape, np.int32)
        settings.run(cube, codes, rec, False, dbits, delta)
        payload, band_bits = self._entropy_encode(settings, codes, dbits)
        self.last_stats = {"band_bits": band_bits}
        header = self.make_header(cube, delta, bit_depth, band_list)
        return self.pack(header, settings.pack(), payload, [rec.astype(np.uint16)])

    @staticmethod
    def _entropy_encode(settings: _Settings, codes: np.ndarray,
                        dbits: int) -> tuple[bytes, np.ndarray]:
        """The payload and the bits of it attributed to every band."""
        if settings.coder_id == 0:
            return golomb.encode_bands(codes, settings.golomb(dbits), order="bil")
        # codes hold the wrapped signed quantizer indices, in [-2**(D-1), 2**(D-1) - 1]
        pred = np.full(codes.shape[2], 1 << (dbits - 1), np.int64)
        enc = ResidualEncoder(codes.shape, (1 << dbits) - 1)
        band_bits = np.zeros(codes.shape[0], np.int64)
        last = enc.num_bits()
        for t in range(codes.shape[1]):
            for i in range(codes.shape[0]):
                enc.encode_line(codes[i, t], pred)
                now = enc.num_bits()
                band_bits[i] += now - last
                last = now
        return enc.finish(), band_bits

    # ---- decoder

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec (with the parameters stored in them)."""
        header, side, payload = self.read_container(data, source)
        bands, rows, cols = header.shape
        dbits = header.bit_depth
        settings = _Settings.unpack(side, source)
        try:
            settings.validate(dbits)
        except HsicompError as exc:
            reason = str(exc).removeprefix("codec 'ccsds123': ")
            raise HsicompError(f"{source}: corrupt side info ({reason})") from None
        try:
            codes = self._entropy_decode(settings, payload, header.shape, dbits)
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt payload ({' '.join(str(exc).split())})") \
                from None
        rec = np.empty(header.shape, np.int32)
        bad = settings.run(np.zeros((1, 1, 1), np.uint16), codes, rec, True, dbits,
                           header.delta)
        if bad >= 0:
            z, rest = divmod(bad, rows * cols)
            raise HsicompError(f"{source}: corrupt payload (impossible quantizer index at "
                               f"band {z}, row {rest // cols}, column {rest % cols})")
        return self.check_output(rec.astype(np.uint16), header, source)

    @staticmethod
    def _entropy_decode(settings: _Settings, payload: bytes, shape: tuple[int, int, int],
                        dbits: int) -> np.ndarray:
        if settings.coder_id == 0:
            return golomb.decode(payload, shape, settings.golomb(dbits),
                                 order="bil").astype(np.int32)
        bands, rows, cols = shape
        codes = np.empty(shape, np.int32)
        pred = np.full(cols, 1 << (dbits - 1), np.int64)
        dec = ResidualDecoder(payload, shape, (1 << dbits) - 1)
        for t in range(rows):
            for i in range(bands):
                codes[i, t] = dec.decode_line(pred)
        return codes

    @classmethod
    def describe_side_info(cls, side: bytes) -> list[tuple[str, str]]:
        """Readable fields of a ccsds123 file's side info (for ``hsicomp info``)."""
        if len(side) not in (_SIDE.size, _SIDE.size + 1):
            return [("side_info", "corrupt")]
        v = _SIDE.unpack(side[:_SIDE.size])

        def name(names: tuple[str, ...], i: int) -> str:
            return names[i] if i < len(names) else f"unknown ({i})"

        return [("coder", name(CODERS, v[1])), ("mode", name(MODES, v[2])),
                ("local_sum", name(LOCAL_SUMS, v[3])), ("P", str(v[4])), ("omega", str(v[5])),
                ("register", str(v[6])), ("nu_min", str(v[7])), ("nu_max", str(v[8])),
                ("t_inc", str(v[9])), ("u_max", str(v[10])), ("gamma0", str(v[11])),
                ("k_init", str(v[12])), ("gamma_star", str(v[13]))] \
            + ([("cascade", str(side[-1]))] if len(side) > _SIDE.size else [])

