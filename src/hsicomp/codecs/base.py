"""The codec interface and the codec registry.

A codec turns a uint16 cube (bands, rows, cols) into the bytes of one complete .hsic file
and back. Everything needed to decode is inside that file, so its size is the rate.
Codecs register themselves with :func:`register`; the modules that define them are listed
in :data:`CODEC_MODULES` and imported on the first registry lookup.

A round trip, lossless and with a maximum error of 2:

>>> import numpy as np
>>> cube = (np.arange(4 * 8 * 8).reshape(4, 8, 8) % 97 * 40).astype(np.uint16)
>>> codec = get_codec("ccsds123")
>>> data = codec.encode(cube, delta=0, bit_depth=12)
>>> bool((codec.decode(data) == cube).all())
True
>>> near = codec.decode(codec.encode(cube, delta=2, bit_depth=12))
>>> int(np.abs(near.astype(int) - cube).max()) <= 2
True
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.container import FLAG_LOSSY, Header, file_check, pack, unpack

#: Modules that define (and register) the project's codecs.
CODEC_MODULES: tuple[str, ...] = ("hsicomp.codecs.anchors", "hsicomp.codecs.linerwkv",
                                  "hsicomp.codecs.ccsds123", "hsicomp.codecs.linerwkv_lms",
                                  "hsicomp.codecs.gdn", "hsicomp.codecs.gdn_gain",
                                  "hsicomp.codecs.gdn_ohm", "hsicomp.codecs.coolchic",
                                  "hsicomp.codecs.lossy_anchors", "hsicomp.codecs.klt")

MAX_BANDS = 0xFFFF
#: Most samples a cube may have (2**28, 512 MiB of samples): decoders allocate the whole cube
#: before decoding, so a header declaring more is refused, and so is a larger cube to encode.
MAX_DECODE_SAMPLES = 1 << 28
MAX_SIDE = 0xFFFFFFFF
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_REGISTRY: dict[str, type[Codec]] = {}
_loaded = False


class Training(StrEnum):
    """How the workflow obtains a codec's model, and what the {model} of its jobs is."""

    #: No model: {model} is "-".
    NONE = "none"
    #: The LineRWKV predictor of each size of the config's ``linerwkv:`` section (trained, or
    #: the released weights); {model} is the size (XS, S, M, L).
    LINERWKV = "linerwkv"
    #: One model trained (``hsicomp train-gdn``) per lambda of the entry; {model} is the
    #: lambda's tag (l0.1).
    PER_LAMBDA = "per-lambda"
    #: One model trained per entry, on all its lambdas; each value of the entry's rate-point
    #: list is one rate point (see :class:`RatePoints`), {model} its tag (g0.5).
    PER_ENTRY = "per-entry"
    #: Nothing trained: the encoder fits a model to each cube; each lambda of the entry is one
    #: rate point, given to the codec as ``lam``; {model} is the lambda's tag (l0.03).
    PER_CUBE = "per-cube"


@dataclass(frozen=True)
class RatePoints:
    """The rate points of a :attr:`Training.PER_ENTRY` codec, or of a lossy codec without a
    model whose rate is set by a parameter: the config key listing them, the codec parameter
    each sets and the letter of their {model} tag; for a per-entry model, how many lambdas
    it is trained with (at least ``min_lambdas``, at most ``max_lambdas``; the points lie in
    [0, lambdas - 1]) and training settings applied unless the entry gives them."""

    key: str
    param: str
    tag: str
    min_lambdas: int = 1
    max_lambdas: int | None = None
    train_defaults: dict[str, Any] = field(default_factory=dict)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` squeezed onto one line (for wrapping library errors)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _convert(codec: str, key: str, value: Any, default: Any) -> Any:
    """Convert a parameter given as text to the type of its default."""
    if not isinstance(value, str) or default is None or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError(value)
        return type(default)(value)
    except ValueError:
        raise HsicompError(f"codec {codec!r}: parameter {key}={value!r} is not a valid "
                           f"{type(default).__name__}") from None


class Codec(ABC):
    """A cube codec writing exactly one .hsic file per cube.

    Subclasses set ``name`` (registry name, also written in the header), ``lossless_only``,
    ``lossy`` and ``defaults`` (the parameters they accept, with default values; text
    values, e.g. from the command line, are converted to the default's type).

    ``training`` (a :class:`Training`) tells the workflow how the codec's model is obtained
    and ``rate_points`` describes the rate points of a per-entry model; ``trained_basis``
    that the codec takes a trained spectral basis (parameter ``basis_model``, a config
    entry's ``trained_basis``). The parameters the workflow sets (:meth:`workflow_params`)
    may not be given in a config entry.

    A ``lossy`` codec guarantees no maximum error: it accepts only delta 0 (meaning "no
    bound"), and its files carry :data:`~hsicomp.io.container.FLAG_LOSSY` in the header.

    Every file carries a check value over its header, side info and decoded data (see
    :mod:`hsicomp.io.container`); ``check_covers`` says what the decoded data is: ``"samples"``
    (the decoded cube, verified by :meth:`check_output`) for decoders that are exact on every
    machine, ``"symbols"`` (the entropy-decoded integers, verified by the codec with
    :meth:`verify_check` before its floating-point synthesis) for the others.
    """

    name: ClassVar[str]
    lossless_only: ClassVar[bool] = False
    lossy: ClassVar[bool] = False
    check_covers: ClassVar[str] = "samples"
    defaults: ClassVar[dict[str, Any]] = {}
    training: ClassVar[Training] = Training.NONE
    rate_points: ClassVar[RatePoints | None] = None
    trained_basis: ClassVar[bool] = False

    @classmethod
    def workflow_params(cls) -> frozenset[str]:
        """The parameters the workflow gives this codec in every job (model file, threads,
        the rate parameter of a point)."""
        point = {cls.rate_points.param} if cls.rate_points else set()
        point |= {"basis_model"} if cls.trained_basis else set()
        if cls.training is Training.NONE:
            return frozenset(point)
        if cls.training is Training.PER_CUBE:
            return frozenset({"lam", "threads", *point})
        return frozenset({"model", "threads", *point})

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise HsicompError(f"codec {self.name!r}: unknown parameter(s) "
                               f"{', '.join(unknown)} (known: {known})")
        self.params: dict[str, Any] = dict(self.defaults)
        for key, value in params.items():
            self.params[key] = _convert(self.name, key, value, self.defaults[key])

    def supports(self, delta: int) -> bool:
        """Whether this codec can guarantee a maximum absolute error of ``delta``.

        A lossy codec takes only delta 0, which for it means "no bound".
        """
        if self.lossy:
            return delta == 0
        return delta == 0 or (delta > 0 and not self.lossless_only)

    @abstractmethod
    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Compress a uint16 (bands, rows, cols) cube; return complete .hsic bytes."""

    @abstractmethod
    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decompress .hsic bytes written by this codec to a uint16 (bands, rows, cols) cube."""

    @classmethod
    def describe_side_info(cls, side_info: bytes) -> list[tuple[str, str]]:
        """Readable (name, value) fields of this codec's side info, for ``hsicomp info``."""
        return []

    # Helpers for implementations.

    def check_input(self, cube: np.ndarray, delta: int, bit_depth: int,
                    band_list: list[int] | None = None) -> np.ndarray:
        """Validate encoder arguments; return the cube as a C-contiguous uint16 array."""
        if not isinstance(cube, np.ndarray) or cube.ndim != 3:
            shape = getattr(cube, "shape", None)
            raise HsicompError(f"expected a 3-D cube (bands, rows, cols), got shape {shape}")
        if cube.dtype != np.uint16:
            raise HsicompError(f"expected uint16 samples, got {cube.dtype}")
        if 0 in cube.shape:
            raise HsicompError(f"empty cube of shape {cube.shape}")
        if cube.shape[0] > MAX_BANDS or max(cube.shape[1:]) > MAX_SIDE \
                or cube.size > MAX_DECODE_SAMPLES:
            raise HsicompError(f"cube of shape {cube.shape} is too large for the container "
                               f"(at most {MAX_DECODE_SAMPLES} samples; code it in tiles)")
        if isinstance(bit_depth, bool) or not isinstance(bit_depth, int | np.integer) \
                or not 1 <= bit_depth <= 16:
            raise HsicompError(f"bit depth must be an integer in 1..16, got {bit_depth!r}")
        if isinstance(delta, bool) or not isinstance(delta, int | np.integer) or delta < 0:
            raise HsicompError(f"delta must be a non-negative integer, got {delta!r}")
        if delta >= 1 << bit_depth:
            # Every reconstruction in 0 .. 2**bit_depth - 1 is already within that error.
            raise HsicompError(f"delta {delta} is too large for {bit_depth}-bit samples "
                               f"(at most {(1 << bit_depth) - 1})")
        if not self.supports(int(delta)):
            kind = ("is lossy (no error bound: use delta 0)" if self.lossy else
                    "is lossless only" if self.lossless_only else "does not support this delta")
            raise HsicompError(f"codec {self.name!r} {kind} (delta {delta} requested)")
        peak = int(cube.max())
        if peak >= 1 << bit_depth:
            raise HsicompError(f"sample value {peak} does not fit in {bit_depth} bits "
                               f"(use a larger bit depth)")
        if band_list is not None:
            if len(band_list) != cube.shape[0]:
                raise HsicompError(f"band list has {len(band_list)} entries for "
                                   f"{cube.shape[0]} bands")
            if any(not 0 <= int(b) <= MAX_BANDS for b in band_list) \
                    or len(set(band_list)) != len(band_list):
                raise HsicompError("band list must hold distinct indices in 0..65535")
        return np.ascontiguousarray(cube)

    def make_header(self, cube: np.ndarray, delta: int, bit_depth: int,
                    band_list: list[int] | None = None, flags: int = 0) -> Header:
        """The .hsic header describing ``cube`` as coded by this codec (FLAG_LOSSY added for
        a lossy codec)."""
        bands, rows, cols = cube.shape
        if self.lossy:
            flags |= FLAG_LOSSY
        return Header(codec=self.name, bands=bands, rows=rows, cols=cols,
                      bit_depth=int(bit_depth), delta=int(delta), flags=flags,
                      band_list=None if band_list is None else [int(b) for b in band_list])

    def pack(self, header: Header, side_info: bytes, payload: bytes,
             decoded: list[np.ndarray]) -> bytes:
        """Serialise a .hsic file (see :func:`hsicomp.io.container.pack`); ``decoded`` is what
        the decoder will reproduce: ``[reconstruction]`` (uint16, the shape of the cube) when
        ``check_covers`` is ``"samples"``, the decoded integer arrays when ``"symbols"``."""
        if self.check_covers == "samples":
            (cube,) = decoded
            if cube.dtype != np.uint16 or cube.shape != header.shape:
                raise TypeError(f"codec {self.name!r}: the check covers a uint16 cube of "
                                f"shape {header.shape}, got {cube.dtype} {cube.shape}")
        return pack(header, side_info, payload, decoded)

    def verify_check(self, header: Header, decoded: list[np.ndarray], source: str) -> None:
        """Raise a one-line error when ``decoded`` is not what the encoder of ``source``
        produced (files of version 1 carry no check and pass)."""
        if header.check is not None and file_check(header, decoded) != header.check:
            what = "samples" if self.check_covers == "samples" else "data"
            raise HsicompError(f"{source}: decoded {what} do not match the file's check value "
                               f"(the file is corrupt or was not written by this codec)")

    def read_container(self, data: bytes, source: str) -> tuple[Header, bytes, bytes]:
        """Unpack .hsic bytes and check that this codec wrote them (refusing headers of more
        than MAX_DECODE_SAMPLES samples, which the decoders allocate at once)."""
        header, side_info, payload = unpack(data, source)
        if header.codec != self.name:
            raise HsicompError(f"{source}: written by codec {header.codec!r}, "
                               f"cannot be decoded by {self.name!r}")
        if header.lossy != self.lossy:
            raise HsicompError(f"{source}: corrupt header (lossy flag "
                               f"{'set' if header.lossy else 'missing'} for codec {self.name!r})")
        if header.samples > MAX_DECODE_SAMPLES:
            bands, rows, cols = header.shape
            raise HsicompError(f"{source}: corrupt header ({bands}x{rows}x{cols} is too large)")
        return header, side_info, payload

    def coding_model(self, kind: str, digest: bytes, load: Callable[[], tuple[Any, bytes]],
                     source: str, param: str = "model") -> Any:
        """The model ``load()`` gives (model, sha256), checked to be the ``kind`` model with
        hash ``digest`` that coded ``source``; one-line errors when the parameter ``param``
        is missing or names another model."""
        if not self.params[param]:
            how = "--model PATH" if param == "model" else f"the parameter {param}=PATH"
            raise HsicompError(f"{source}: coded with {kind} model {digest.hex()[:16]}...; "
                               f"give that model file with {how}")
        model, have = load()
        if have != digest:
            raise HsicompError(f"{source}: coded with model {digest.hex()[:16]}..., but "
                               f"{self.params[param]} is model {have.hex()[:16]}...")
        return model

    def check_output(self, cube: np.ndarray, header: Header, source: str) -> np.ndarray:
        """Check a decoded cube against the header; return it as uint16."""
        if cube.shape != header.shape:
            raise HsicompError(f"{source}: corrupt payload (decoded shape {cube.shape}, "
                               f"header says {header.shape})")
        if cube.dtype != np.uint16:
            raise HsicompError(f"{source}: corrupt payload (decoded {cube.dtype} samples)")
        if int(cube.max()) >= 1 << header.bit_depth:
            raise HsicompError(f"{source}: corrupt payload (decoded values exceed "
                               f"{header.bit_depth} bits)")
        if self.check_covers == "samples":
            self.verify_check(header, [cube], source)
        return cube


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator adding a codec to the registry under ``cls.name``."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} has no codec name")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"codec name {name!r} is already registered")
    _REGISTRY[name] = cls
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in CODEC_MODULES:
            importlib.import_module(module)
        _loaded = True


def available_codecs() -> list[str]:
    """Names of every registered codec, sorted."""
    _load()
    return sorted(_REGISTRY)


def codec_class(name: str) -> type[Codec] | None:
    """The codec class registered as ``name``, or None."""
    _load()
    return _REGISTRY.get(name)


def get_codec(name: str, params: dict[str, Any] | None = None) -> Codec:
    """An instance of the codec registered as ``name``, built with ``params``."""
    _load()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise HsicompError(f"unknown codec {name!r} (known: "
                           f"{', '.join(available_codecs())})") from None
    return cls(**(params or {}))


def decode_bytes(data: bytes, params: dict[str, Any] | None = None,
                 source: str = "input") -> tuple[Header, np.ndarray]:
    """Decode .hsic bytes with the codec named in their header; return (header, cube)."""
    header, _, _ = unpack(data, source)
    if codec_class(header.codec) is None:
        raise HsicompError(f"{source}: written by an unknown codec {header.codec!r} (known: "
                           f"{', '.join(available_codecs())})")
    cube = get_codec(header.codec, params).decode(data, source)
    return header, cube
