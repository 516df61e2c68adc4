"""Gain units (Cui et al., CVPR 2021): continuous variable rate from one transform codec.

A gain matrix ``G`` (levels x latent channels) scales the latent channel-wise before
quantisation, an inverse gain matrix ``G'`` rescales the quantised latent before synthesis.
Both start at ones and are used as absolute values. Level ``s`` is trained with the ``s``-th
lambda; a real-valued ``level`` in ``[0, levels - 1]`` interpolates geometrically between
the rows ``s = min(floor(level), levels - 2)`` and ``s + 1`` with ``l = level - s``::

    g = |G_s| ** (1 - l) * |G_{s+1}| ** l        (the same rule for G')

:func:`gain_vectors` is the one place that rule lives; encoder and decoder both call it. At
an integer level the result is bit-identical to the trained row (``x**1 * y**0 == x``).

In a file the level is stored as the fixed-point integer ``round(level * LEVEL_SCALE)``;
encoder and decoder both use ``level_from_code`` of that integer, so they see the same level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LEVEL_SCALE", "GainUnits", "gain_vectors", "level_code", "level_from_code"]

#: Fixed-point scale of a stored level (resolution 1/65536, exact in float).
LEVEL_SCALE = 1 << 16


def level_code(level: float, levels: int) -> int:
    """Fixed-point code of ``level``; ValueError unless it is finite and in range."""
    if not math.isfinite(level) or not 0 <= level <= levels - 1:
        raise ValueError(f"level must be in [0, {levels - 1}], got {level}")
    return round(level * LEVEL_SCALE)


def level_from_code(code: int) -> float:
    """The level a fixed-point code stands for (exact)."""
    return code / LEVEL_SCALE


def gain_vectors(gain: Tensor, inverse_gain: Tensor, level: float) -> tuple[Tensor, Tensor]:
    """Gain and inverse gain vectors (latent channels,) at a real ``level`` (see module doc)."""
    levels = gain.shape[0]
    if not 0 <= level <= levels - 1:
        raise ValueError(f"level must be in [0, {levels - 1}], got {level}")
    if levels == 1:
        return gain[0].abs(), inverse_gain[0].abs()
    s = min(int(math.floor(level)), levels - 2)
    t = level - s

    def mix(m: Tensor) -> Tensor:
        return m[s].abs() ** (1.0 - t) * m[s + 1].abs() ** t

    return mix(gain), mix(inverse_gain)


class GainUnits(nn.Module):
    """The parameters ``gain`` and ``inverse_gain`` (levels, channels), initialised to ones."""

    def __init__(self, levels: int, channels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError("gain units need at least one level")
        self.gain = nn.Parameter(torch.ones(levels, channels))
        self.inverse_gain = nn.Parameter(torch.ones(levels, channels))

    @property
    def levels(self) -> int:
        """Number of trained levels."""
        return int(self.gain.shape[0])

    def vectors(self, level: float) -> tuple[Tensor, Tensor]:
        """:func:`gain_vectors` of this module's matrices."""
        return gain_vectors(self.gain, self.inverse_gain, level)
