"""Neural networks: the LineRWKV predictor and its RWKV-4 blocks."""

from hsicomp.models.linerwkv import (
    SIZES,
    LineRWKV,
    LineRWKVConfig,
    LineRWKVStepper,
    predict_recurrent,
)
from hsicomp.models.rwkv import Block, ChannelMix, RWKVState, TimeMix, init_state

__all__ = [
    "SIZES",
    "Block",
    "ChannelMix",
    "LineRWKV",
    "LineRWKVConfig",
    "LineRWKVStepper",
    "RWKVState",
    "TimeMix",
    "init_state",
    "predict_recurrent",
]
