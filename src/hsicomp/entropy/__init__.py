"""Entropy coders for prediction residuals: CCSDS-123 sample-adaptive Golomb (``golomb``) and
a context-adaptive range coder (``adaptive``)."""

from hsicomp.entropy.adaptive import ResidualDecoder, ResidualEncoder, decode_cube, encode_cube
from hsicomp.entropy.golomb import (
    SampleAdaptiveParams,
    bit_count,
    code_lengths,
    decode,
    encode,
)

__all__ = [
    "ResidualDecoder",
    "ResidualEncoder",
    "SampleAdaptiveParams",
    "bit_count",
    "code_lengths",
    "decode",
    "decode_cube",
    "encode",
    "encode_cube",
]
