"""Spectral basis of ``coolchic`` with ``basis = K``: the cube's own KLT, coded as ``klt`` does.

The basis is the integer band mean ``m`` and the ``K`` leading eigenvectors of the cube's
spectral covariance (:func:`hsicomp.codecs.klt.eigenbasis`), eigenvector ``k`` sent as the
integers ``V_k = round(v_k 2**F_k)``. ``F_k`` (``MIN_FRACTION_BITS .. MAX_FRACTION_BITS``)
follows the rule of ``klt`` with the component's own error in place of the uniform
quantiser's: ``2**F_k >= sqrt(bands lambda_k / MATRIX_ERROR) / sqrt(12 e_k)``, ``e_k`` the
mean squared error of the decoded coefficient ``k``, so rounding the eigenvector adds at
most about ``MATRIX_ERROR`` of that error. The mean (one row) and the eigenvectors (one row
each, offset by the row's minimum) are lossless JPEG XL streams, exactly as in ``klt``.

The decoder turns ``K`` coefficient images ``c`` (the synthesis output, in units of the
cube's scale ``s``) into bands: ``x = clip(round(m + s sum_k V_k 2**-F_k c_k))``, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsicomp.codecs.klt import (
    MATRIX_ERROR,
    MAX_FRACTION_BITS,
    MIN_FRACTION_BITS,
    jxl_image,
    jxl_lossless,
)
from hsicomp.errors import HsicompError
from hsicomp.models.spectral import SpectralBasisModel

__all__ = ["SpectralBasis", "basis_fraction_bits", "choose_basis", "read_basis"]

#: JPEG XL effort of the mean and eigenvector streams (the ``klt`` default).
EFFORT = 7
#: Shifts of all ``F_k`` that :func:`choose_basis` tries.
BIT_SHIFTS = (-4, -3, -2, -1, 0, 1)


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def basis_fraction_bits(eigenvalues: np.ndarray, errors: np.ndarray, bands: int) -> list[int]:
    """Fraction bits ``F_k`` of eigenvectors with variances ``eigenvalues`` whose decoded
    coefficients have mean squared errors ``errors`` (both in squared sample units)."""
    lam = np.maximum(np.asarray(eigenvalues, np.float64), 1e-12)
    err = np.maximum(np.asarray(errors, np.float64), 1e-12)
    need = 0.5 * np.log2(bands * lam / MATRIX_ERROR) - 0.5 * np.log2(12.0 * err)
    return np.clip(np.ceil(need), MIN_FRACTION_BITS, MAX_FRACTION_BITS).astype(int).tolist()


@dataclass
class SpectralBasis:
    """Integer band mean, quantised eigenvectors (columns) and their fraction bits."""

    mean: np.ndarray  # (bands,) int64
    matrix: np.ndarray  # (bands, K) int64, column k scaled by 2**bits[k]
    bits: list[int]

    @classmethod
    def quantised(cls, mean: np.ndarray, vectors: np.ndarray, bits: list[int]
                  ) -> SpectralBasis:
        """The basis of float eigenvectors ``vectors`` (bands, K) rounded to ``bits``."""
        matrix = np.rint(vectors * np.exp2(np.array(bits, np.float64))).astype(np.int64)
        return cls(np.rint(mean).astype(np.int64), matrix, list(bits))

    @classmethod
    def trained(cls, model: SpectralBasisModel, k: int) -> SpectralBasis:
        """The basis of the mean and first ``k`` eigenvectors of a trained basis, the
        eigenvectors at ``MAX_FRACTION_BITS`` (nothing of it is in the file)."""
        return cls.quantised(model.mean, model.vectors[:, :k], [MAX_FRACTION_BITS] * k)

    def vectors(self) -> np.ndarray:
        """The eigenvectors as decoded, float64 (bands, K)."""
        return self.matrix * np.exp2(-np.array(self.bits, np.float64))

    def synthesis(self, coefficients: np.ndarray, scale: float, bit_depth: int) -> np.ndarray:
        """Bands (bands, pixels) uint16 of coefficients (K, pixels) in units of ``scale``."""
        c = np.nan_to_num(coefficients.astype(np.float64))
        x = self.mean.astype(np.float64)[:, None] + float(scale) * (self.vectors() @ c)
        return np.clip(np.rint(x), 0, (1 << bit_depth) - 1).astype(np.uint16)

    def symbols(self) -> list[np.ndarray]:
        """The integers a file's check covers: mean, then the eigenvector matrix."""
        return [self.mean, self.matrix]

    def pack(self) -> tuple[list[int], bytes, bytes]:
        """Side-info integers (``F_k`` then the zig-zag row minima), mean and matrix
        streams."""
        lows = self.matrix.min(axis=0)
        low = int(self.mean.min())
        if low < 0 or int(self.mean.max()) > 0xFFFF \
                or int((self.matrix - lows).max()) > 0xFFFF:
            raise HsicompError("coolchic: the spectral basis does not fit 16 bits")
        mean_stream = jxl_lossless(self.mean[None], EFFORT)
        matrix_stream = jxl_lossless((self.matrix - lows).T, EFFORT)
        return (list(self.bits) + [_zigzag(int(v)) for v in lows], mean_stream,
                matrix_stream)


def read_basis(ints: list[int], mean_stream: bytes, matrix_stream: bytes, bands: int,
               source: str) -> SpectralBasis:
    """The basis of :meth:`SpectralBasis.pack`'s output (``ints``: ``F_k`` then the
    zig-zag row minima); HsicompError when it is inconsistent."""
    k = len(ints) // 2
    bits, lows = ints[:k], ints[k:]
    if len(ints) % 2 or not 1 <= k <= bands \
            or any(not MIN_FRACTION_BITS <= b <= MAX_FRACTION_BITS for b in bits) \
            or any(v > 1 << 33 for v in lows):
        raise HsicompError(f"{source}: corrupt side info (spectral basis fields)")
    mean = jxl_image(mean_stream, (1, bands), source, "basis mean")[0]
    matrix = jxl_image(matrix_stream, (k, bands), source, "basis matrix") \
        + np.array([_unzigzag(v) for v in lows], np.int64)[:, None]
    return SpectralBasis(mean, np.ascontiguousarray(matrix.T), bits)


def choose_basis(mean: np.ndarray, vectors: np.ndarray, bits: list[int],
                 coefficients: np.ndarray, cube: np.ndarray, scale: float, lam: float,
                 bit_depth: int) -> SpectralBasis:
    """The basis of ``vectors`` whose fraction bits, ``bits`` shifted by one of
    :data:`BIT_SHIFTS`, minimise ``D + lam R`` for the decoded ``coefficients`` (K, pixels):
    ``D`` the MSE of the decoded cube over ``scale**2``, ``R`` the basis bits per sample."""
    x = cube.reshape(cube.shape[0], -1).astype(np.float64)
    best: tuple[float, SpectralBasis] | None = None
    for shift in BIT_SHIFTS:
        shifted = np.clip(np.array(bits) + shift, MIN_FRACTION_BITS, MAX_FRACTION_BITS)
        basis = SpectralBasis.quantised(mean, vectors, shifted.tolist())
        _, mean_stream, matrix_stream = basis.pack()
        err = basis.synthesis(coefficients, scale, bit_depth) - x
        loss = float(np.mean(err * err)) / scale ** 2 \
            + lam * 8 * (len(mean_stream) + len(matrix_stream)) / x.size
        if best is None or loss < best[0]:
            best = (loss, basis)
    assert best is not None
    return best[1]
