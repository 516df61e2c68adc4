"""Neural networks and other models: the LineRWKV predictor and its RWKV-4 blocks, the gdn
family, Cool-Chic, spectral bases.

Importing the package loads no torch: the LineRWKV names below are loaded on first use, so
that torch-free modules (:mod:`hsicomp.models.spectral`, :mod:`hsicomp.models.cache`) can be
imported by the codecs without it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Name -> the submodule that defines it.
_LAZY = {
    **dict.fromkeys(("SIZES", "LineRWKV", "LineRWKVConfig", "LineRWKVStepper",
                     "predict_recurrent"), "linerwkv"),
    **dict.fromkeys(("Block", "ChannelMix", "RWKVState", "TimeMix", "init_state"), "rwkv"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"hsicomp.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
