"""Entropy coders for mapped prediction residuals."""

from hsicomp.entropy.golomb import (
    SampleAdaptiveParams,
    bit_count,
    code_lengths,
    decode,
    encode,
)

__all__ = ["SampleAdaptiveParams", "bit_count", "code_lengths", "decode", "encode"]
