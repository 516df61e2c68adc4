"""Classical anchor codecs: every band coded as an independent 2-D image.

``jpegls`` (lossless and near-lossless), ``jpeg2000`` (reversible 5/3 wavelet, lossless),
``jpegxl`` (lossless modular mode), all through :mod:`imagecodecs`, and ``raw`` (uncompressed
16-bit BSQ, the trivial reference). The per-band codecs concatenate the band codestreams in
the payload and store their lengths in the side info as unsigned LEB128 varints.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar

import imagecodecs
import numpy as np

from hsicomp.codecs.base import Codec, one_line, register
from hsicomp.errors import HsicompError
from hsicomp.io.bsq import BSQ_DTYPE, bsq_bytes
from hsicomp.io.container import Header, decode_varints, encode_varints

#: Largest NEAR parameter JPEG-LS accepts.
JPEGLS_MAX_DELTA = 255
#: libjxl encoder efforts (imagecodecs clamps other values silently, so they are refused).
JPEGXL_EFFORTS = range(1, 11)


class BandCodestreams:
    """What every codec of independent band codestreams shares (this module's and
    :mod:`hsicomp.codecs.lossy_anchors`'): the library check, the band loop and the split of
    the payload into the bands' codestreams."""

    name: ClassVar[str]
    #: imagecodecs feature flag that must be available (e.g. ``imagecodecs.JPEGLS``).
    feature: ClassVar[object]
    last_stats: dict

    def _require(self) -> None:
        if not getattr(self.feature, "available", False):
            raise HsicompError(f"codec {self.name!r} is not available in this imagecodecs "
                               f"build")

    def _encode_bands(self, cube: np.ndarray, encode_one: Callable[[np.ndarray], bytes]
                      ) -> list[bytes]:
        """The codestream of every band (``encode_one(band)``); a failure names the band.
        Sets ``last_stats["band_bits"]``, each band's codestream size in bits."""
        segments = []
        for i, band in enumerate(cube):
            try:
                segments.append(bytes(encode_one(band)))
            except Exception as exc:
                raise HsicompError(f"codec {self.name!r} failed on band {i}: "
                                   f"{one_line(exc)}") from None
        self.last_stats = {"band_bits": np.array([8 * len(s) for s in segments], np.int64)}
        return segments

    @staticmethod
    def _segments(payload: bytes, lengths: list[int], source: str) -> list[bytes]:
        """The payload cut into the bands' codestreams of ``lengths`` bytes."""
        if sum(lengths) != len(payload):
            raise HsicompError(f"{source}: corrupt side info (segments total {sum(lengths)} "
                               f"bytes, payload has {len(payload)})")
        ends = np.cumsum([0, *lengths]).tolist()
        return [payload[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]


class PerBandCodec(BandCodestreams, Codec):
    """Base of the codecs that code each band as an independent 2-D image."""

    @abstractmethod
    def encode_band(self, band: np.ndarray, delta: int, bit_depth: int) -> bytes:
        """Encode one (rows, cols) uint16 band."""

    @abstractmethod
    def decode_band(self, segment: bytes) -> np.ndarray:
        """Decode one band's codestream."""

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Code every band independently; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        self._require()
        segments = self._encode_bands(cube,
                                      lambda band: self.encode_band(band, int(delta),
                                                                    int(bit_depth)))
        header = self.make_header(cube, delta, bit_depth, band_list)
        # lossy bands: the check covers what the decoder will output
        rec = self._decode_bands(segments, header, f"codec {self.name!r}") if delta else cube
        return self.pack(header, encode_varints(len(s) for s in segments), b"".join(segments),
                         [rec])

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec."""
        header, side_info, payload = self.read_container(data, source)
        self._require()
        segments = self._segments(payload, decode_varints(side_info, header.bands, source),
                                  source)
        return self.check_output(self._decode_bands(segments, header, source), header, source)

    def _decode_bands(self, segments: list[bytes], header: Header, source: str) -> np.ndarray:
        """The cube of the band codestreams ``segments`` (clipped to the bit depth)."""
        out = np.empty(header.shape, dtype=np.uint16)
        for i, segment in enumerate(segments):
            try:
                band = np.asarray(self.decode_band(segment))
            except Exception as exc:
                raise HsicompError(f"{source}: corrupt {self.name} data in band {i}: "
                                   f"{one_line(exc)}") from None
            if band.shape != header.shape[1:] or band.dtype != np.uint16:
                raise HsicompError(f"{source}: corrupt {self.name} data in band {i} "
                                   f"(decoded {band.dtype} {band.shape}, expected uint16 "
                                   f"{header.shape[1:]})")
            out[i] = band
        if header.delta:
            # Near-lossless reconstructions may overshoot the declared range; clipping to it
            # only moves values towards the original ones.
            np.minimum(out, (1 << header.bit_depth) - 1, out=out)
        return out


@register
class JpegLS(PerBandCodec):
    """JPEG-LS (CharLS): lossless, or near-lossless with NEAR = delta (at most 255)."""

    name = "jpegls"
    feature = imagecodecs.JPEGLS

    def supports(self, delta: int) -> bool:
        return 0 <= delta <= JPEGLS_MAX_DELTA

    def encode_band(self, band: np.ndarray, delta: int, bit_depth: int) -> bytes:
        return imagecodecs.jpegls_encode(band, level=delta)

    def decode_band(self, segment: bytes) -> np.ndarray:
        return imagecodecs.jpegls_decode(segment)


@register
class Jpeg2000(PerBandCodec):
    """JPEG 2000 (OpenJPEG) J2K codestreams, reversible 5/3 wavelet without rate limit."""

    name = "jpeg2000"
    lossless_only = True
    feature = imagecodecs.JPEG2K

    def encode_band(self, band: np.ndarray, delta: int, bit_depth: int) -> bytes:
        # level=0: no quality/rate target, i.e. every coding pass is kept (lossless).
        return imagecodecs.jpeg2k_encode(band, level=0, codecformat="J2K", reversible=True,
                                         bitspersample=bit_depth)

    def decode_band(self, segment: bytes) -> np.ndarray:
        return imagecodecs.jpeg2k_decode(segment)


@register
class JpegXL(PerBandCodec):
    """JPEG XL (libjxl) lossless modular mode; parameter ``effort`` (1..10, default 5)."""

    name = "jpegxl"
    lossless_only = True
    feature = imagecodecs.JPEGXL
    defaults: ClassVar[dict[str, object]] = {"effort": 5}

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        if self.params["effort"] not in JPEGXL_EFFORTS:
            raise HsicompError(f"codec 'jpegxl': effort must be an integer in 1..10, got "
                               f"{self.params['effort']!r}")

    def encode_band(self, band: np.ndarray, delta: int, bit_depth: int) -> bytes:
        return imagecodecs.jpegxl_encode(band, lossless=True, effort=self.params["effort"])

    def decode_band(self, segment: bytes) -> np.ndarray:
        return imagecodecs.jpegxl_decode(segment)


@register
class Raw(Codec):
    """Uncompressed 16-bit BSQ samples: the trivial reference (16 bits/sample + header)."""

    name = "raw"
    lossless_only = True

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Store the cube's BSQ bytes as the payload."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        bands, rows, cols = cube.shape
        # Statistics of the last encode: ``band_bits``, each band's size in bits.
        self.last_stats = {"band_bits": np.full(bands, 8 * BSQ_DTYPE.itemsize * rows * cols,
                                                np.int64)}
        return self.pack(self.make_header(cube, delta, bit_depth, band_list), b"",
                         bsq_bytes(cube), [cube])

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Read the BSQ payload back."""
        header, side_info, payload = self.read_container(data, source)
        expected = header.samples * BSQ_DTYPE.itemsize
        if side_info or len(payload) != expected:
            raise HsicompError(f"{source}: corrupt raw payload ({len(payload)} bytes, "
                               f"expected {expected})")
        cube = np.frombuffer(payload, dtype=BSQ_DTYPE).reshape(header.shape)
        return self.check_output(cube.astype(np.uint16), header, source)
