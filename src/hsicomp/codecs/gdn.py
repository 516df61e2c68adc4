"""Learned transform codec with GDN (``gdn``): lossy coding with a trained ``TransformCodec``.

Encoder
    The cube is normalised per band with the model's ``band_offset`` / ``band_scale`` (set
    from the training data, stored in the model file), the analysis transform gives the
    latent, which is rounded to integers ``y`` of shape ``(M, h, w)`` and range-coded with
    the model's frozen integer tables (:func:`hsicomp.entropy.factorized.encode_latents`).

Decoder
    The latents are decoded exactly (integer tables), the synthesis transform and the
    de-normalisation run in float32, and the result is rounded to the nearest integer and
    clipped to ``0 .. 2**bit_depth - 1``.

Lossy
    There is no maximum-error guarantee: the header carries ``FLAG_LOSSY`` and delta 0
    (the only delta the codec accepts; it means "no bound"). The rate is exact on every
    machine (the file is the latents); the reconstruction is float network output, so on
    another machine a sample close to a rounding boundary may come out one apart.

Side information
    ``u8`` layout version (1), 32 bytes sha256 of the model weights (including the
    normalisation and the entropy tables), then the varints ``M``, ``h``, ``w`` (latent
    shape). The payload is the latent stream.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hsicomp.codecs.base import Codec, Training, register
from hsicomp.errors import HsicompError
from hsicomp.io.container import decode_varints, encode_varints

LAYOUT_VERSION = 1
_HASH_BYTES = 32
_FIXED_SIDE = 1 + _HASH_BYTES


def _load(path: str) -> tuple[Any, bytes]:
    """The model (eval mode, CPU) and the sha256 of its weights."""
    from hsicomp.models.checkpoint import load_gdn_model, model_hash

    model, _ = load_gdn_model(path)
    return model, bytes.fromhex(model_hash(model))


@register
class GdnCodec(Codec):
    """Learned transform codec: GDN analysis/synthesis with a factorized entropy model.

    See the module docstring for the method and the file layout.

    Parameters: ``model`` (GDN model file written by ``hsicomp train-gdn``, needed to encode
    and decode) and ``threads`` (torch threads; 0 = leave torch's setting).
    """

    name = "gdn"
    lossy = True
    check_covers = "symbols"  # the float synthesis may round differently on another CPU
    defaults: ClassVar[dict[str, Any]] = {"model": "", "threads": 0}
    training = Training.PER_LAMBDA

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        if int(self.params["threads"]) < 0:
            raise HsicompError(f"codec {self.name!r}: threads must be >= 0 (0 = torch's "
                               "setting)")
        self.last_stats: dict[str, Any] = {}

    #: Varints after the model hash: the latent shape (a subclass may add its own).
    side_ints: ClassVar[int] = 3

    def _model(self) -> tuple[Any, bytes]:
        path = str(self.params["model"])
        if not path:
            raise HsicompError(f"codec {self.name!r} needs a model file (--model PATH or param "
                               "model=PATH)")
        from hsicomp.models.cache import load_cached

        model, digest = load_cached(path, _load)
        self.check_model(model, path)
        if int(self.params["threads"]) > 0:
            import torch

            torch.set_num_threads(int(self.params["threads"]))
        return model, digest

    def check_model(self, model: Any, path: str) -> None:
        """HsicompError when the model does not suit this codec (gain units, OHM)."""
        if model.gain_units is not None:
            raise HsicompError(f"{path}: model has gain units; use codec 'gdn-gain'")
        if model.config.ohm_symbols:
            raise HsicompError(f"{path}: model has One-Hot-Max quantisation; use codec "
                               "'gdn-ohm'")

    def encode_rate(self, model: Any) -> tuple[dict[str, Any], list[int]]:
        """Rate arguments of the model's ``compress`` (a gain level, OHM channels; none for
        gdn) and the extra side-info varints that record them."""
        return {}, []

    def decode_rate(self, model: Any, shape: tuple[int, int, int], extra: list[int],
                    source: str) -> dict[str, Any]:
        """Rate arguments of a file from its latent shape and extra side-info varints (none
        for gdn)."""
        return {}

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Transform, quantise and code a cube; return complete .hsic bytes."""
        import torch

        cube = self.check_input(cube, delta, bit_depth, band_list)
        model, digest = self._model()
        bands, rows, cols = cube.shape
        if bands != model.config.bands:
            raise HsicompError(f"codec {self.name!r}: cube has {bands} bands, model "
                               f"{self.params['model']} codes {model.config.bands}")
        rate, extra = self.encode_rate(model)
        x = model.normalize(torch.from_numpy(cube.astype(np.float32))[None])
        try:
            symbols = model.symbols(x, **rate)
            payload = model.encode_symbols(symbols)
        except ValueError as exc:
            raise HsicompError(f"codec {self.name!r}: cannot code the latents ({exc})") from None
        shape = model.latent_shape(rows, cols, rate.get("channels"))
        self.last_stats = {"latent_shape": shape}
        side = bytes([LAYOUT_VERSION]) + digest + encode_varints([*shape, *extra])
        return self.pack(self.make_header(cube, delta, bit_depth, band_list), side, payload,
                         [symbols])

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec (needs the same model file)."""
        header, side, payload = self.read_container(data, source)
        bands, rows, cols = header.shape
        digest, shape, extra = self._read_side(side, source)
        model = self.coding_model("GDN", digest, self._model, source)
        rate = self.decode_rate(model, shape, extra, source)
        expected = model.latent_shape(rows, cols, rate.get("channels"))
        if bands != model.config.bands or shape != expected:
            raise HsicompError(f"{source}: corrupt header ({bands} bands, latent {shape}; the "
                               f"model expects {model.config.bands} bands, latent "
                               f"{expected})")
        try:
            symbols = model.decode_symbols(payload, rows, cols, rate.get("channels"))
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt payload ({exc})") from None
        self.verify_check(header, [symbols], source)
        x_hat = model.reconstruct(symbols, rows, cols, rate.get("level"))
        out = model.denormalize(x_hat)[0].numpy().astype(np.float64)
        out = np.clip(np.rint(np.nan_to_num(out)), 0, (1 << header.bit_depth) - 1)
        return self.check_output(out.astype(np.uint16), header, source)

    @classmethod
    def _read_side(cls, side: bytes, source: str
                   ) -> tuple[bytes, tuple[int, int, int], list[int]]:
        """Model hash, latent shape and the extra varints of the side info."""
        if len(side) < _FIXED_SIDE:
            raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
        if side[0] != LAYOUT_VERSION:
            raise HsicompError(f"{source}: unsupported {cls.name} layout version {side[0]}")
        ints = decode_varints(side[_FIXED_SIDE:], cls.side_ints, source, "side-info integers")
        return side[1:_FIXED_SIDE], tuple(ints[:3]), ints[3:]  # type: ignore[return-value]

    @classmethod
    def describe_side_info(cls, side: bytes) -> list[tuple[str, str]]:
        """Readable fields of a gdn file's side info (for ``hsicomp info``)."""
        try:
            digest, shape, extra = cls._read_side(side, "side info")
        except HsicompError:
            return [("side_info", "corrupt")]
        return [("model_sha256", digest.hex()), ("latent_shape", "x".join(map(str, shape))),
                *cls.describe_extra(extra)]

    @classmethod
    def describe_extra(cls, extra: list[int]) -> list[tuple[str, str]]:
        """Readable fields of the extra side-info varints (none for gdn)."""
        return []
