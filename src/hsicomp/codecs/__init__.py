"""Cube codecs: the common interface, the registry and the classical anchor codecs."""

from hsicomp.codecs.base import (
    CODEC_MODULES,
    Codec,
    available_codecs,
    codec_class,
    decode_bytes,
    get_codec,
    register,
)

__all__ = [
    "CODEC_MODULES",
    "Codec",
    "available_codecs",
    "codec_class",
    "decode_bytes",
    "get_codec",
    "register",
]
