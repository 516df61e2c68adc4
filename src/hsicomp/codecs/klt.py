"""Spectral KLT transform coder (``klt``): the classical hyperspectral lossy anchor.

Encoder
    The per-band mean ``m`` (rounded to integers) is removed and the covariance of the
    spectra is diagonalised in float64 (``numpy.linalg.eigh``); eigenvectors are ordered by
    decreasing eigenvalue and signed so that their largest entry is positive. Eigenvector
    ``k`` gives the component ``y_k = v_k . (x - m)``, and is sent quantised to integers
    ``V_k = round(v_k 2**F_k)``, with ``F_k`` (at most 15) just fine enough that its
    rounding adds at most :data:`MATRIX_ERROR` of the component's quantisation error in the
    synthesis: ``2**F_k >= sqrt(bands lambda_k / MATRIX_ERROR) / step``. The components
    are quantised with one step for all,
    ``q_k = round(y_k / step)`` (for an orthonormal transform at high rate, the MSE-optimal
    allocation). Components after the last one with a non-zero value are dropped with their
    eigenvectors. Each kept component image, offset by its minimum, is coded with lossless
    JPEG XL, and so are the mean vector (one row) and the kept eigenvectors (one row each,
    offset by the row's minimum).

Decoder
    ``x = clip(round(m + step 2**-F S))`` with ``F = max F_k`` and ``S = sum_k V_k
    2**(F - F_k) q_k``. ``S`` is a sum of integers below 2**53, exact in float64 in any
    summation order; the two float operations after it are single IEEE-754 roundings. So
    every machine reconstructs the same samples, and the file's check covers them.

File layout
    Side info: ``u8`` layout version (1), ``f64`` step, the varints ``K`` (components
    kept), mean-stream and matrix-stream lengths, then per kept component ``F_k``, the
    zig-zag row minimum of ``V_k``, the zig-zag minimum of ``q_k`` and its stream's length;
    then the mean and matrix JPEG XL streams. Payload: the component streams in order.
    Everything the decoder needs is in the file, so its size is the rate.

Trained basis (parameter ``basis_model``)
    With a basis trained on other data (:mod:`hsicomp.models.spectral`, ``hsicomp
    train-basis``), its mean and eigenvectors (``F_k`` = 15 for all) replace the cube's own,
    and the file carries the basis's sha256 instead of the mean and matrix streams: side
    info ``u8`` layout version (2), ``f64`` step, 32 bytes sha256, the varint ``K``, then
    per kept component the zig-zag minimum of ``q_k`` and its stream's length. The decoder
    needs the same model file.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import imagecodecs
import numpy as np

from hsicomp.codecs.base import Codec, RatePoints, one_line, register
from hsicomp.codecs.lossy_anchors import number_param
from hsicomp.errors import HsicompError
from hsicomp.io.container import Header, encode_varints, read_varints
from hsicomp.models.spectral import (
    DIGEST_BYTES,
    SpectralBasisModel,
    cached_basis_model,
    principal_axes,
)

LAYOUT_VERSION = 1
#: Layout version of files coded with a trained basis.
TRAINED_LAYOUT_VERSION = 2
#: Largest fraction bits of a quantised eigenvector entry (rows then fit in 16 bits).
MAX_FRACTION_BITS = 15
#: Fewest fraction bits of a quantised eigenvector entry.
MIN_FRACTION_BITS = 2
#: Matrix rounding error allowed per component, as a fraction of its quantisation error.
MATRIX_ERROR = 1 / 16
#: Smallest and largest quantisation steps.
MIN_STEP, MAX_STEP = 1e-3, 1e6
#: Sums of the synthesis stay below this bound, so float64 adds them exactly.
EXACT_BOUND = 2.0**52
_STEP = struct.Struct("<d")
_FIXED_SIDE = 1 + _STEP.size


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def jxl_lossless(image: np.ndarray, effort: int) -> bytes:
    """Lossless JPEG XL of a 2-D array of integers in 0..65535 (uint8 up to 8 bits)."""
    bits = max(1, int(image.max(initial=0)).bit_length())
    dtype = np.uint8 if bits <= 8 else np.uint16
    return bytes(imagecodecs.jpegxl_encode(np.ascontiguousarray(image, dtype=dtype),
                                           lossless=True, effort=effort, bitspersample=bits,
                                           numthreads=1))


def jxl_image(stream: bytes, shape: tuple[int, int], source: str, what: str) -> np.ndarray:
    """The int64 array of a lossless JPEG XL ``stream`` of ``shape`` (one-line errors)."""
    try:
        image = np.asarray(imagecodecs.jpegxl_decode(stream, numthreads=1))
    except Exception as exc:
        raise HsicompError(f"{source}: corrupt {what} ({one_line(exc)})") from None
    if image.shape != shape or image.dtype not in (np.uint8, np.uint16):
        raise HsicompError(f"{source}: corrupt {what} (decoded {image.dtype} {image.shape}, "
                           f"expected {shape})")
    return image.astype(np.int64)


@dataclass
class KltData:
    """What a klt file holds: integer mean, quantised eigenvectors and components."""

    step: float
    mean: np.ndarray  # (bands,) int64
    matrix: np.ndarray  # (bands, K) int64, column k scaled by 2**bits[k]
    bits: list[int]
    symbols: np.ndarray  # (K, rows * cols) int64

    def synthesis(self, bit_depth: int) -> np.ndarray:
        """The reconstruction (bands, rows * cols) as uint16; the same on every machine."""
        bands, pixels = self.mean.size, self.symbols.shape[1]
        out = np.broadcast_to(self.mean.astype(np.float64)[:, None], (bands, pixels)).copy()
        if self.bits:
            top = max(self.bits)
            scaled = (self.matrix << (top - np.array(self.bits, np.int64))).astype(np.float64)
            q = self.symbols.astype(np.float64)
            bound = np.abs(scaled) @ np.abs(q).max(axis=1)
            if not float(bound.max()) < EXACT_BOUND:
                raise ValueError("synthesis sums exceed the exact float64 range")
            out += (scaled @ q) * math.ldexp(self.step, -top)
        return np.clip(np.rint(out), 0, (1 << bit_depth) - 1).astype(np.uint16)


def fraction_bits(eigenvalues: np.ndarray, bands: int, step: float) -> np.ndarray:
    """Fraction bits ``F_k`` of each eigenvector for a quantisation step ``step``."""
    with np.errstate(divide="ignore"):
        need = 0.5 * np.log2(bands * np.maximum(eigenvalues, 0) / MATRIX_ERROR) - math.log2(step)
    return np.clip(np.ceil(need), MIN_FRACTION_BITS, MAX_FRACTION_BITS).astype(np.int64)


def eigenbasis(cube: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer band mean ``(bands,)``, eigenvalues (decreasing), eigenvectors ``(bands,
    bands)`` (columns, largest entry positive) and the mean-free spectra ``(bands, pixels)``
    of ``cube``, all float64."""
    bands = cube.shape[0]
    x = cube.reshape(bands, -1).astype(np.float64)
    mean = np.rint(x.mean(axis=1))
    x -= mean[:, None]
    values, vectors = principal_axes(x @ x.T / x.shape[1])
    return mean, values, vectors, x


def param_basis(codec: Codec, bands: int) -> SpectralBasisModel | None:
    """The trained basis named by ``codec``'s parameter ``basis_model`` (None when it is
    empty), checked to have ``bands`` bands."""
    path = str(codec.params["basis_model"])
    if not path:
        return None
    model, _ = cached_basis_model(path)
    if model.bands != bands:
        raise HsicompError(f"{path}: a spectral basis of {model.bands} bands, the cube has "
                           f"{bands}")
    return model


def coding_basis(codec: Codec, digest: bytes, bands: int, source: str) -> SpectralBasisModel:
    """The trained basis with hash ``digest`` that coded ``source`` (``bands`` bands), from
    ``codec``'s parameter ``basis_model``; one-line errors when it is missing or another."""
    model = codec.coding_model("spectral basis", digest,
                               lambda: cached_basis_model(str(codec.params["basis_model"])),
                               source, param="basis_model")
    if model.bands != bands:
        raise HsicompError(f"{source}: corrupt header ({bands} bands, coded with a basis of "
                           f"{model.bands})")
    return model


def analyse(cube: np.ndarray, step: float, model: SpectralBasisModel | None = None
            ) -> tuple[KltData, np.ndarray]:
    """The KLT of ``cube`` (its own, or the trained basis ``model``): mean, quantised
    eigenvectors and quantised components of the file, and the unquantised components of
    the kept eigenvectors (K, rows * cols)."""
    bands = cube.shape[0]
    if model is None:
        mean, values, vectors, x = eigenbasis(cube)
        bits = fraction_bits(values, bands, step)
    else:
        mean, vectors = model.mean.astype(np.float64), model.vectors
        x = cube.reshape(bands, -1).astype(np.float64) - mean[:, None]
        bits = np.full(bands, MAX_FRACTION_BITS, np.int64)
    matrix = np.rint(vectors * np.exp2(bits)).astype(np.int64)
    y = vectors.T @ x
    symbols = np.rint(y / step).astype(np.int64)
    alive = np.flatnonzero(np.any(symbols != 0, axis=1))
    keep = int(alive[-1]) + 1 if alive.size else 0
    klt = KltData(step=step, mean=mean.astype(np.int64), matrix=matrix[:, :keep],
                  bits=bits[:keep].tolist(), symbols=symbols[:keep])
    return klt, y[:keep]


@register
class Klt(Codec):
    """Spectral KLT + one uniform quantisation step + lossless JPEG XL per component.

    See the module docstring for the method and the file layout. Parameters: ``step``
    (quantisation step of the components, in sample units; larger gives smaller files),
    ``effort`` (JPEG XL effort, 1..10) and ``basis_model`` (a trained spectral basis file of
    ``hsicomp train-basis``, used instead of the cube's own KLT; "" = none).
    """

    name = "klt"
    lossy = True
    defaults: ClassVar[dict[str, Any]] = {"step": 200.0, "effort": 7, "basis_model": ""}
    trained_basis = True
    rate_points = RatePoints(key="points", param="step", tag="s")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.params["step"] = number_param(self.name, "step", self.params["step"], MIN_STEP,
                                           MAX_STEP)
        self.params["effort"] = int(number_param(self.name, "effort", self.params["effort"],
                                                 1, 10, integer=True))
        self.last_stats: dict[str, Any] = {}

    def _require(self) -> None:
        if not getattr(imagecodecs.JPEGXL, "available", False):
            raise HsicompError(f"codec {self.name!r} needs JPEG XL, which this imagecodecs "
                               f"build lacks")

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Transform, quantise and code a cube; return complete .hsic bytes."""
        cube = self.check_input(cube, delta, bit_depth, band_list)
        self._require()
        effort = self.params["effort"]
        model = param_basis(self, cube.shape[0])
        klt, _ = analyse(cube, self.params["step"], model)
        keep = len(klt.bits)
        lows = klt.symbols.min(axis=1) if keep else np.zeros(0, np.int64)
        if keep and int((klt.symbols.max(axis=1) - lows).max()) > 0xFFFF:
            raise HsicompError(f"codec {self.name!r}: step {self.params['step']:g} is too "
                               f"small for this cube (a component spans more than 16 bits)")
        rows, cols = cube.shape[1:]
        streams = [jxl_lossless((q - low).reshape(rows, cols), effort)
                   for q, low in zip(klt.symbols, lows, strict=True)]
        if model is None:
            mean_stream = jxl_lossless(klt.mean[None], effort)
            row_lows = klt.matrix.min(axis=0) if keep else np.zeros(0, np.int64)
            matrix_stream = jxl_lossless((klt.matrix - row_lows).T, effort) if keep else b""
            ints = [keep, len(mean_stream), len(matrix_stream)]
            for k in range(keep):
                ints += [klt.bits[k], _zigzag(int(row_lows[k])), _zigzag(int(lows[k])),
                         len(streams[k])]
            side = b"".join([bytes([LAYOUT_VERSION]), _STEP.pack(klt.step),
                             encode_varints(ints), mean_stream, matrix_stream])
        else:
            mean_stream = matrix_stream = b""
            ints = [keep]
            for k in range(keep):
                ints += [_zigzag(int(lows[k])), len(streams[k])]
            side = b"".join([bytes([TRAINED_LAYOUT_VERSION]), _STEP.pack(klt.step),
                             model.digest, encode_varints(ints)])
        try:
            rec = klt.synthesis(int(bit_depth)).reshape(cube.shape)
        except ValueError as exc:
            raise HsicompError(f"codec {self.name!r}: {exc}") from None
        # Statistics of the last encode (no per-band bits: every component spans all bands).
        self.last_stats = {"components": keep, "side_bytes": len(side),
                           "mean_bytes": len(mean_stream), "matrix_bytes": len(matrix_stream),
                           "component_bytes": sum(map(len, streams))}
        return self.pack(self.make_header(cube, delta, bit_depth, band_list), side,
                         b"".join(streams), [rec])

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec."""
        header, side, payload = self.read_container(data, source)
        self._require()
        model = None
        if side[:1] == bytes([TRAINED_LAYOUT_VERSION]):
            model = coding_basis(self, side[_FIXED_SIDE:_FIXED_SIDE + DIGEST_BYTES],
                                 header.bands, source)
        klt = read_klt(header, side, payload, source, model)
        try:
            cube = klt.synthesis(header.bit_depth).reshape(header.shape)
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt data ({exc})") from None
        return self.check_output(cube, header, source)

    @classmethod
    def describe_side_info(cls, side_info: bytes) -> list[tuple[str, str]]:
        """Readable fields of a klt file's side info (for ``hsicomp info``)."""
        try:
            step, ints, _ = _read_fields(side_info, "side info")
        except HsicompError:
            return [("side_info", "corrupt")]
        keep = ints[0]
        if side_info[0] == TRAINED_LAYOUT_VERSION:
            digest = side_info[_FIXED_SIDE:_FIXED_SIDE + DIGEST_BYTES].hex()
            return [("step", f"{step:g}"), ("components", str(keep)),
                    ("basis_model_sha256", digest)]
        mean_len, matrix_len = ints[1:3]
        bits = ints[3::4]
        fields = [("step", f"{step:g}"), ("components", str(keep)),
                  ("mean_bytes", str(mean_len)), ("matrix_bytes", str(matrix_len))]
        if bits:
            fields.append(("eigenvector_bits", f"{min(bits)}..{max(bits)} fraction bits"))
        return fields


def _read_fields(side: bytes, source: str) -> tuple[float, list[int], int]:
    """Step, the side-info varints and the offset after them (layout 1: of the mean
    stream)."""
    if len(side) < _FIXED_SIDE:
        raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
    if side[0] not in (LAYOUT_VERSION, TRAINED_LAYOUT_VERSION):
        raise HsicompError(f"{source}: unsupported klt layout version {side[0]}")
    trained = side[0] == TRAINED_LAYOUT_VERSION
    (step,) = _STEP.unpack_from(side, 1)
    if not (math.isfinite(step) and MIN_STEP <= step <= MAX_STEP):
        raise HsicompError(f"{source}: corrupt side info (step {step!r})")
    (keep,), pos = read_varints(side, _FIXED_SIDE + (DIGEST_BYTES if trained else 0), 1,
                                source)
    if keep > 0xFFFF:
        raise HsicompError(f"{source}: corrupt side info ({keep} components)")
    rest, pos = read_varints(side, pos, 2 * keep if trained else 2 + 4 * keep, source)
    return step, [keep, *rest], pos


def read_klt(header: Header, side: bytes, payload: bytes, source: str,
             model: SpectralBasisModel | None = None) -> KltData:
    """The contents of a klt file (``header``, ``side``, ``payload``; ``model``: the trained
    basis of a layout-2 file), checked."""
    step, ints, pos = _read_fields(side, source)
    keep = ints[0]
    bands, rows, cols = header.shape
    if model is not None:
        if keep > bands or pos != len(side):
            raise HsicompError(f"{source}: corrupt side info ({keep} components of {bands} "
                               f"bands, or data after the fields)")
        lows, lengths = ints[1::2], ints[2::2]
        bits = [MAX_FRACTION_BITS] * keep
        row_lows: list[int] = []
    else:
        mean_len, matrix_len = ints[1:3]
        if keep > bands or pos + mean_len + matrix_len != len(side) \
                or (keep == 0) != (not matrix_len):
            raise HsicompError(f"{source}: corrupt side info ({keep} components of {bands} "
                               f"bands, stream lengths do not fill it)")
        bits, row_lows, lows, lengths = (ints[3 + i::4] for i in range(4))
    if any(b > MAX_FRACTION_BITS for b in bits) or sum(lengths) != len(payload) \
            or any(v > 1 << 33 for v in row_lows + lows):
        raise HsicompError(f"{source}: corrupt side info (eigenvector bits, offsets or "
                           f"component lengths)")
    lows = [_unzigzag(v) for v in lows]
    if model is not None:
        mean = model.mean
        matrix = np.rint(model.vectors[:, :keep] * 2.0**MAX_FRACTION_BITS).astype(np.int64)
    else:
        mean = jxl_image(side[pos:pos + mean_len], (1, bands), source, "mean vector")[0]
        matrix = np.zeros((bands, 0), np.int64)
        if keep:
            stream = side[pos + mean_len:]
            matrix = (jxl_image(stream, (keep, bands), source, "eigenvector matrix")
                      + np.array([_unzigzag(v) for v in row_lows], np.int64)[:, None]).T
    symbols = np.zeros((keep, rows * cols), np.int64)
    start = 0
    for k, length in enumerate(lengths):
        image = jxl_image(payload[start:start + length], (rows, cols), source, f"component {k}")
        symbols[k] = image.reshape(-1) + lows[k]
        start += length
    return KltData(step=step, mean=mean, matrix=np.ascontiguousarray(matrix), bits=bits,
                   symbols=symbols)
