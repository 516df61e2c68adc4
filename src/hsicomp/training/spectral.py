"""Spectral basis training (``hsicomp train-basis``): the principal axes of every spectrum
of a dataset's training split (see :mod:`hsicomp.models.spectral`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.models.spectral import SpectralBasisModel
from hsicomp.training.loop import PatchStore


def train_basis(dataset_dir: Path) -> SpectralBasisModel:
    """The spectral basis of the training split of a prepared dataset (float64 moments,
    patches in manifest order: the same model on every machine up to float rounding)."""
    store = PatchStore(dataset_dir, "train")
    if not len(store):
        raise HsicompError(f"{dataset_dir}: no training patches")
    count, total, products = 0, None, None
    for index in range(len(store)):
        patch = store.read(index)
        x = patch.reshape(patch.shape[0], -1).astype(np.float64)
        if total is None:
            total, products = np.zeros(x.shape[0]), np.zeros((x.shape[0], x.shape[0]))
        elif x.shape[0] != total.size:
            raise HsicompError(f"{dataset_dir}: training patches with {total.size} and "
                               f"{x.shape[0]} bands")
        count += x.shape[1]
        total += x.sum(axis=1)
        products += x @ x.T
    return SpectralBasisModel.from_moments(count, total, products)
