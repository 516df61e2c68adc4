"""Classical lossy anchor codecs: every band coded as an independent 2-D image by a library.

``avif`` (AV1 intra, libavif), ``jpeg2000-lossy`` (irreversible 9/7 wavelet with a PSNR
target, OpenJPEG) and ``jpegxl-lossy`` (VarDCT with a butteraugli distance, libjxl), all
through :mod:`imagecodecs`. Each sets its rate with one parameter, which the workflow sweeps
as the entry's ``points`` (see :class:`~hsicomp.codecs.base.RatePoints`).

File layout
    The payload is the band codestreams, concatenated, exactly as the library writes them
    (each carries its own container or codestream header: about 270 bytes for AVIF, 139 for
    a J2K main header, a few for JPEG XL; these are part of the rate). The side info is a
    ``u8`` layout version (1), the codec's fixed fields (``avif``: the ``u8`` shift) and the
    byte length of every band's codestream as unsigned LEB128 varints.

Determinism
    The encoders run single-threaded and write the same bytes for the same cube and
    parameters. The decoders are the libraries' own; JPEG XL and 9/7 JPEG 2000 synthesise in
    floating point, so the file's check covers the codestreams (``check_covers =
    "symbols"``), not the decoded samples, which another library build may round
    differently.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from hsicomp.codecs.anchors import BandCodestreams
from hsicomp.codecs.base import Codec, RatePoints, one_line, register
from hsicomp.errors import HsicompError
from hsicomp.io.container import Header, decode_varints, encode_varints

LAYOUT_VERSION = 1
#: Sample bits of the AV1 images ``avif`` writes (the most AVIF profiles allow).
AVIF_BITS = 12
#: libjxl's largest butteraugli distance.
MAX_DISTANCE = 25.0


def number_param(codec: str, key: str, value: Any, low: float, high: float,
                 integer: bool = False, low_open: bool = False) -> float:
    """``value`` as a finite number in [low, high] (``(low, high]`` with ``low_open``; an
    integral value when ``integer``), else a one-line HsicompError."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    number = float(value) if ok else math.nan
    inside = (low < number if low_open else low <= number) and number <= high
    if not (math.isfinite(number) and inside) or (integer and not number.is_integer()):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        kind = "an integer" if integer else "a number"
        raise HsicompError(f"codec {codec!r}: {key} must be {kind} in {span}, got {value!r}")
    return number


class LossyPerBandCodec(BandCodestreams, Codec):
    """Base of the lossy codecs that code each band as an independent 2-D image."""

    lossy = True
    check_covers = "symbols"  # the libraries' float synthesis may round differently elsewhere
    #: Bytes of codec-specific side info after the layout version.
    fixed_side: ClassVar[int] = 0

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.last_stats: dict[str, Any] = {}
        self.check_params()

    @abstractmethod
    def check_params(self) -> None:
        """Validate ``self.params`` (one-line HsicompError) and normalise their types."""

    def setup(self, cube: np.ndarray, bit_depth: int) -> bytes:
        """The codec-specific side info for ``cube`` (``fixed_side`` bytes; none here)."""
        return b""

    @abstractmethod
    def encode_band(self, band: np.ndarray, bit_depth: int, fixed: bytes) -> bytes:
        """Encode one (rows, cols) uint16 band."""

    @abstractmethod
    def decode_band(self, segment: bytes, bit_depth: int, fixed: bytes) -> np.ndarray:
        """Decode one band's codestream to its (rows, cols) reconstruction (integers)."""

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Code every band independently; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        self._require()
        fixed = self.setup(cube, int(bit_depth))
        segments = self._encode_bands(cube,
                                      lambda band: self.encode_band(band, int(bit_depth), fixed))
        payload = b"".join(segments)
        side = bytes([LAYOUT_VERSION]) + fixed + encode_varints(len(s) for s in segments)
        return self.pack(self.make_header(cube, delta, bit_depth, band_list), side, payload,
                         [payload])

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec."""
        header, side, payload = self.read_container(data, source)
        self._require()
        fixed, lengths = self._read_side(side, header.bands, source)
        segments = self._segments(payload, lengths, source)
        self.verify_check(header, [payload], source)
        out = np.empty(header.shape, dtype=np.uint16)
        for i, segment in enumerate(segments):
            out[i] = self._band(segment, header, fixed, i, source)
        return self.check_output(out, header, source)

    def _band(self, segment: bytes, header: Header, fixed: bytes, i: int,
              source: str) -> np.ndarray:
        """Band ``i`` decoded, checked and clipped to the bit depth."""
        try:
            band = np.asarray(self.decode_band(segment, header.bit_depth, fixed))
        except Exception as exc:
            raise HsicompError(f"{source}: corrupt {self.name} data in band {i}: "
                               f"{one_line(exc)}") from None
        if band.shape != header.shape[1:] or band.dtype.kind not in "ui":
            raise HsicompError(f"{source}: corrupt {self.name} data in band {i} (decoded "
                               f"{band.dtype} {band.shape}, expected {header.shape[1:]})")
        return np.clip(band, 0, (1 << header.bit_depth) - 1)

    @classmethod
    def _read_side(cls, side: bytes, bands: int, source: str) -> tuple[bytes, list[int]]:
        """The fixed fields and the band codestream lengths of the side info."""
        start = 1 + cls.fixed_side
        if len(side) < start:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
        if side[0] != LAYOUT_VERSION:
            raise HsicompError(f"{source}: unsupported {cls.name} layout version {side[0]}")
        return side[1:start], decode_varints(side[start:], bands, source)

    @classmethod
    def describe_fixed(cls, fixed: bytes) -> list[tuple[str, str]]:
        """Readable codec-specific side-info fields (none here)."""
        return []

    @classmethod
    def describe_side_info(cls, side_info: bytes) -> list[tuple[str, str]]:
        """Readable fields of the side info (for ``hsicomp info``)."""
        start = 1 + cls.fixed_side
        if len(side_info) < start or side_info[0] != LAYOUT_VERSION:
            return [("side_info", "corrupt")]
        # every varint (a band's codestream length) ends with a byte below 0x80
        count = sum(1 for b in side_info[start:] if not b & 0x80)
        return [("layout_version", str(side_info[0])), *cls.describe_fixed(side_info[1:start]),
                ("band_codestreams", str(count))]


def _as_image(band: np.ndarray, bit_depth: int) -> np.ndarray:
    """A band in the dtype the libraries expect for its bit depth (uint8 up to 8 bits)."""
    return np.ascontiguousarray(band.astype(np.uint8) if bit_depth <= 8 else band)


@register
class Avif(LossyPerBandCodec):
    """AVIF (libavif, AV1 intra): every band one 12-bit monochrome image; ``quality`` 0..99.

    AVIF holds at most 12 bits per sample. A cube whose largest sample needs ``n`` > 12 bits
    is shifted right by ``s = n - 12`` bits (``v = x >> s``, at most 4095) and reconstructed
    at the centre of each bin, ``(v << s) + 2**(s - 1)``, clipped to the bit depth; ``s``
    (0 when the samples fit in 12 bits) is stored in the side info. With the EnMAP crops
    (samples below 2**13) that is one bit: a quantisation error of at most 1, before AV1.

    The band is given to libavif as a grey RGB image and coded as YUV 4:0:0 (the luma plane
    is the band; BT.601 full range maps grey to itself). Parameters: ``quality`` (libavif
    quality, 0 = worst; 100, lossless, is refused) and ``speed`` (0 = slowest .. 10).
    """

    name = "avif"
    feature = imagecodecs.AVIF
    fixed_side = 1
    defaults: ClassVar[dict[str, Any]] = {"quality": 50, "speed": 6}
    rate_points = RatePoints(key="points", param="quality", tag="q")

    def check_params(self) -> None:
        self.params["quality"] = int(number_param(self.name, "quality", self.params["quality"],
                                                  0, 99, integer=True))
        self.params["speed"] = int(number_param(self.name, "speed", self.params["speed"],
                                                0, 10, integer=True))

    def setup(self, cube: np.ndarray, bit_depth: int) -> bytes:
        return bytes([max(0, int(cube.max()).bit_length() - AVIF_BITS)])

    def encode_band(self, band: np.ndarray, bit_depth: int, fixed: bytes) -> bytes:
        grey = np.ascontiguousarray(np.repeat((band >> fixed[0])[:, :, None], 3, axis=2))
        return imagecodecs.avif_encode(
            grey, level=self.params["quality"], speed=self.params["speed"],
            bitspersample=AVIF_BITS, pixelformat=imagecodecs.AVIF.PIXEL_FORMAT.YUV400,
            codec=imagecodecs.AVIF.CODEC_CHOICE.AOM, numthreads=1)

    def decode_band(self, segment: bytes, bit_depth: int, fixed: bytes) -> np.ndarray:
        shift = fixed[0]
        if shift > 16 - AVIF_BITS:
            raise ValueError(f"shift {shift} exceeds {16 - AVIF_BITS}")
        value = imagecodecs.avif_decode(segment, numthreads=1)
        if value.ndim != 2 or value.dtype != np.uint16 or int(value.max(initial=0)) >> AVIF_BITS:
            raise ValueError(f"not a {AVIF_BITS}-bit grey image ({value.dtype} {value.shape})")
        value = value.astype(np.int64) << shift
        return value + (1 << shift >> 1)

    @classmethod
    def describe_fixed(cls, fixed: bytes) -> list[tuple[str, str]]:
        return [("shift", f"{fixed[0]} (samples >> {fixed[0]} coded in {AVIF_BITS} bits)")]


@register
class Jpeg2000Lossy(LossyPerBandCodec):
    """JPEG 2000 (OpenJPEG) per band, irreversible 9/7 wavelet, rate set by a PSNR target.

    imagecodecs' ``level`` is OpenJPEG's fixed-quality target (``tcp_distoratio``): the
    encoder keeps the coding passes (one quality layer) that bring the band's PSNR, against
    the peak ``2**bit_depth - 1`` of the file's bit depth, to about ``psnr`` dB (the
    measured PSNR lands within about 1 dB; below about 20 dB every target gives the
    smallest codestream). Parameter ``psnr`` (dB, 0 < psnr <= 100). J2K codestreams, one
    tile, imagecodecs' decomposition levels (5, fewer for small bands).
    """

    name = "jpeg2000-lossy"
    feature = imagecodecs.JPEG2K
    defaults: ClassVar[dict[str, Any]] = {"psnr": 40.0}
    rate_points = RatePoints(key="points", param="psnr", tag="p")

    def check_params(self) -> None:
        self.params["psnr"] = number_param(self.name, "psnr", self.params["psnr"], 0, 100,
                                           low_open=True)

    def encode_band(self, band: np.ndarray, bit_depth: int, fixed: bytes) -> bytes:
        return imagecodecs.jpeg2k_encode(_as_image(band, bit_depth), level=self.params["psnr"],
                                         codecformat="J2K", reversible=False,
                                         bitspersample=bit_depth, numthreads=1)

    def decode_band(self, segment: bytes, bit_depth: int, fixed: bytes) -> np.ndarray:
        return imagecodecs.jpeg2k_decode(segment, numthreads=1)


@register
class JpegXLLossy(LossyPerBandCodec):
    """JPEG XL (libjxl) per band, lossy VarDCT at a butteraugli ``distance`` (0 < d <= 25).

    The band is declared with the file's bit depth (``bitspersample``), so the distance is
    relative to the range ``0 .. 2**bit_depth - 1``. Parameters: ``distance`` (1 is
    visually lossless for photographs; larger is coarser) and ``effort`` (1..10).
    """

    name = "jpegxl-lossy"
    feature = imagecodecs.JPEGXL
    defaults: ClassVar[dict[str, Any]] = {"distance": 1.0, "effort": 7}
    rate_points = RatePoints(key="points", param="distance", tag="d")

    def check_params(self) -> None:
        self.params["distance"] = number_param(self.name, "distance", self.params["distance"],
                                               0, MAX_DISTANCE, low_open=True)
        self.params["effort"] = int(number_param(self.name, "effort", self.params["effort"],
                                                 1, 10, integer=True))

    def encode_band(self, band: np.ndarray, bit_depth: int, fixed: bytes) -> bytes:
        return imagecodecs.jpegxl_encode(_as_image(band, bit_depth),
                                         distance=self.params["distance"],
                                         effort=self.params["effort"], bitspersample=bit_depth,
                                         numthreads=1)

    def decode_band(self, segment: bytes, bit_depth: int, fixed: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(segment, numthreads=1)
