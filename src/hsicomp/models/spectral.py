"""Spectral bases: the principal axes of a set of spectra, per cube or trained once.

A trained basis (``hsicomp train-basis``) is the integer band mean and the eigenvectors of
the spectral covariance of a dataset's training split. ``klt`` and ``coolchic`` (with
``basis = K``) can code with it instead of the cube's own basis: the file then carries only
the basis's sha256 (:attr:`SpectralBasisModel.digest`, over its arrays), not the mean and
the eigenvectors, and the decoder needs the same model file.

File format: a NumPy ``.npz`` with the arrays ``mean`` (bands,) int64, ``values`` (bands,)
float64 (eigenvalues, decreasing) and ``vectors`` (bands, bands) float64 (columns).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_write_bytes
from hsicomp.models.cache import load_cached

__all__ = ["SpectralBasisModel", "cached_basis_model", "load_basis_model", "principal_axes"]

#: Bytes of a model's identity in a file (sha256).
DIGEST_BYTES = 32


def principal_axes(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (decreasing) and eigenvectors (columns, each signed so that its entry of
    largest magnitude is positive) of a symmetric matrix, float64."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, np.float64))
    order = np.argsort(-values, kind="stable")
    values, vectors = values[order], vectors[:, order]
    peak = np.argmax(np.abs(vectors), axis=0)
    vectors *= np.where(vectors[peak, np.arange(vectors.shape[1])] < 0, -1.0, 1.0)
    return values, vectors


@dataclass(frozen=True)
class SpectralBasisModel:
    """Integer band mean, eigenvalues and eigenvectors (columns) of a training set."""

    mean: np.ndarray
    values: np.ndarray
    vectors: np.ndarray

    @property
    def bands(self) -> int:
        """Number of bands."""
        return int(self.mean.size)

    @property
    def digest(self) -> bytes:
        """sha256 over the arrays (shape, then little-endian bytes): the model's identity."""
        h = hashlib.sha256()
        for array, dtype in ((self.mean, "<i8"), (self.values, "<f8"), (self.vectors, "<f8")):
            h.update(repr(array.shape).encode())
            h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
        return h.digest()

    @classmethod
    def from_moments(cls, count: int, total: np.ndarray, products: np.ndarray
                     ) -> SpectralBasisModel:
        """The basis of ``count`` spectra with sum ``total`` (bands,) and sum of outer
        products ``products`` (bands, bands), both float64."""
        if count < 2:
            raise HsicompError(f"a spectral basis needs at least 2 spectra, got {count}")
        first = total / count
        mean = np.rint(first)
        # covariance about the integer mean: E[x x^T] - m E[x]^T - E[x] m^T + m m^T
        cov = products / count - np.outer(mean, first) - np.outer(first, mean) \
            + np.outer(mean, mean)
        values, vectors = principal_axes((cov + cov.T) / 2)
        return cls(mean.astype(np.int64), values, vectors)

    def save(self, path: str | Path) -> None:
        """Write the model (atomically)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:  # fixed dates: the same bytes each time
            for name, array in (("mean", self.mean), ("values", self.values),
                                ("vectors", self.vectors)):
                member = io.BytesIO()
                np.save(member, array, allow_pickle=False)
                archive.writestr(zipfile.ZipInfo(f"{name}.npy", (1980, 1, 1, 0, 0, 0)),
                                 member.getvalue())
        atomic_write_bytes(path, buffer.getvalue())


def load_basis_model(path: str | Path) -> SpectralBasisModel:
    """The model in ``path``; HsicompError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as data:
            mean, values, vectors = (data[k] for k in ("mean", "values", "vectors"))
    except FileNotFoundError:
        raise HsicompError(f"{path}: spectral basis file not found") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise HsicompError(f"{path}: not a spectral basis file ({exc})") from None
    bands = mean.shape[0] if mean.ndim == 1 else 0
    if not bands or mean.dtype.kind != "i" or values.shape != (bands,) \
            or vectors.shape != (bands, bands) or not np.isfinite(vectors).all():
        raise HsicompError(f"{path}: not a spectral basis file (bad array shapes or types)")
    return SpectralBasisModel(mean.astype(np.int64), values.astype(np.float64),
                              vectors.astype(np.float64))


def _load_with_digest(path: str) -> tuple[SpectralBasisModel, bytes]:
    model = load_basis_model(path)
    return model, model.digest


def cached_basis_model(path: str | Path) -> tuple[SpectralBasisModel, bytes]:
    """The model in ``path`` and its digest, loaded once per file version."""
    return load_cached(path, _load_with_digest)
