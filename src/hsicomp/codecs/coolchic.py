"""Cool-Chic (``coolchic``): lossy coding by a small model overfitted to each cube.

Encoder
    The cube is normalised with one offset and one scale (its mean and standard deviation,
    float32), a :class:`~hsicomp.models.coolchic.CoolChic` model is trained on it
    (:func:`~hsicomp.models.coolchic.fit`), its latents are rounded and its network weights
    quantised (:func:`~hsicomp.models.coolchic.quantize`). The file carries the quantised
    weights and the latents, both range-coded (:mod:`hsicomp.entropy.arm`).

Decoder
    The weights are decoded with fixed tables, the latents grid by grid with the
    fixed-point ARM, and the synthesis runs in float32; the result is de-normalised,
    rounded and clipped to ``0 .. 2**bit_depth - 1``. The decoder re-encodes what it
    decoded and refuses a payload that differs from those words (extra or altered data).

Determinism
    Machine-independent: the coding tables (:mod:`hsicomp.entropy.laplace_tables`, decimal
    and integer arithmetic), the integer ARM and the range coder, so every machine decodes
    the same latents and weights and the rate is exact. The reconstruction is float32
    network output: on another machine a sample near a rounding boundary may come out one
    apart. Encoding is deterministic for a seed on one machine with a fixed number of torch
    threads (the ``threads`` parameter).

Lossy
    No maximum-error guarantee: the header carries ``FLAG_LOSSY`` and delta 0.

Side information
    ``u8`` layout version (1); offset and scale (float32, little endian); the varints
    ``grids, channels, context, channel_context, arm_hidden, synth_hidden, synth_layers``,
    then per network tensor (coding order of
    :func:`~hsicomp.models.coolchic.tensor_shapes`) its step exponent ``k``, weight table
    ``j`` and largest magnitude ``r_max``. The payload is the range coder's 32-bit
    words: all weight symbols (``value + r_max``), then the latents of every grid.

Spectral basis (``basis = K > 0``)
    The synthesis outputs ``K`` coefficients per pixel instead of the bands: the target is
    the cube's first ``K`` KLT coefficients over the scale (no offset), and the decoder
    turns them into bands with the basis the file carries (integer band mean and ``K``
    quantised eigenvectors, lossless JPEG XL as in ``klt``; see
    :mod:`hsicomp.codecs.spectral_basis`). Side info: ``u8`` layout version (2), scale
    (float32), the varint lengths of the mean and matrix streams, the two streams, then the
    varints of the architecture, ``K``, every ``F_k``, every zig-zag row minimum and the
    per-tensor weight codes as above (the output layer has ``K`` rows). The check value
    also covers the basis integers.

Trained spectral basis (``basis = K`` and parameter ``basis_model``)
    The mean and the first ``K`` eigenvectors of a basis trained on other data
    (:mod:`hsicomp.models.spectral`, ``hsicomp train-basis``; eigenvectors rounded to 15
    fraction bits) replace the cube's own, and the file carries the basis's sha256 instead
    of the two streams: side info ``u8`` layout version (3), scale (float32), 32 bytes
    sha256, then the varints of the architecture, ``K`` and the per-tensor weight codes.
    The decoder needs the same model file.
"""

from __future__ import annotations

import struct
import time
from typing import Any, ClassVar

import numpy as np

from hsicomp.codecs.base import Codec, Training, register
from hsicomp.codecs.klt import coding_basis, eigenbasis, param_basis
from hsicomp.codecs.spectral_basis import (
    SpectralBasis,
    basis_fraction_bits,
    choose_basis,
    read_basis,
)
from hsicomp.errors import HsicompError
from hsicomp.io.container import decode_varints, encode_varints, read_varints
from hsicomp.models.spectral import DIGEST_BYTES, SpectralBasisModel

LAYOUT_VERSION = 1
#: Layout version of files with a spectral basis (``basis > 0``).
BASIS_LAYOUT_VERSION = 2
#: Layout version of files with a trained spectral basis (``basis > 0``, ``basis_model``).
TRAINED_LAYOUT_VERSION = 3
#: Most basis vectors (``basis``).
MAX_BASIS = 64
_CONFIG_FIELDS = ("grids", "channels", "context", "channel_context", "arm_hidden",
                  "synth_hidden", "synth_layers")
_NORM = struct.Struct("<ff")
_SCALE = struct.Struct("<f")
_FIXED_SIDE = 1 + _NORM.size
#: Largest Adam learning rate accepted (the default is 0.04; far larger ones diverge).
MAX_LR = 1.0


@register
class CoolChicCodec(Codec):
    """Cool-Chic for cubes: latent grids, ARM and synthesis MLP fitted to each cube, coded.

    See the module docstring for the method and the file layout.

    Parameters: ``lam`` (rate weight: larger gives smaller files), ``iterations``,
    ``preset`` (``default`` or ``paper``: architecture and iterations; the architecture
    parameters below override it when non-zero), ``grids``, ``channels`` (features per
    grid), ``context`` (spatial ARM context), ``channel_context``, ``arm_hidden``,
    ``synth_hidden``, ``synth_layers`` (-1 = preset), ``lr`` (Adam learning rate, at most
    1), ``seed``, ``threads`` (torch threads; 0 = leave torch's setting) and ``basis`` (0:
    the synthesis outputs every band; ``K > 0``: it outputs ``K`` coefficients of the cube's
    own ``K``-vector KLT basis, which the file carries; see
    :mod:`hsicomp.codecs.spectral_basis`), ``basis_model`` (with ``basis = K``: a trained
    spectral basis file of ``hsicomp train-basis``, whose first ``K`` vectors replace the
    cube's own; "" = none).
    """

    name = "coolchic"
    lossy = True
    check_covers = "symbols"  # the float synthesis may round differently on another CPU
    defaults: ClassVar[dict[str, Any]] = {
        "lam": 0.01, "iterations": 0, "preset": "default", "grids": 0, "channels": 0,
        "context": 0, "channel_context": -1, "arm_hidden": 0, "synth_hidden": 0,
        "synth_layers": -1, "lr": 0.04, "seed": 0, "threads": 1, "basis": 0,
        "basis_model": ""}
    training = Training.PER_CUBE
    trained_basis = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.last_stats: dict[str, Any] = {}
        self.last_reconstruction: np.ndarray | None = None
        self.settings()  # parameter errors surface at construction

    def settings(self) -> tuple[Any, int]:
        """The architecture (``CoolChicConfig``) and iteration count the parameters give."""
        from dataclasses import replace

        from hsicomp.models.coolchic import PRESETS

        p = self.params
        if p["preset"] not in PRESETS:
            raise HsicompError(f"codec {self.name!r}: unknown preset {p['preset']!r} "
                               f"(known: {', '.join(PRESETS)})")
        preset = PRESETS[p["preset"]]
        over = {k: int(p[k]) for k in _CONFIG_FIELDS
                if int(p[k]) > 0 or (k in ("channel_context", "synth_layers") and int(p[k]) >= 0)}
        config = replace(preset["config"], **over)
        try:
            config.validate()
        except ValueError as exc:
            raise HsicompError(f"codec {self.name!r}: {exc}") from None
        iterations = int(p["iterations"]) or int(preset["iterations"])
        if iterations < 1 or iterations > 10**7:
            raise HsicompError(f"codec {self.name!r}: iterations must be positive")
        lam, lr = float(p["lam"]), float(p["lr"])
        if not (np.isfinite(lam) and lam >= 0):
            raise HsicompError(f"codec {self.name!r}: lam must be >= 0, got {lam:g}")
        if not 0 < lr <= MAX_LR:
            raise HsicompError(f"codec {self.name!r}: lr must be in (0, {MAX_LR:g}], got "
                               f"{lr:g}")
        if int(p["threads"]) < 0:
            raise HsicompError(f"codec {self.name!r}: threads must be >= 0")
        if not 0 <= int(p["basis"]) <= MAX_BASIS:
            raise HsicompError(f"codec {self.name!r}: basis must be in 0..{MAX_BASIS}")
        if p["basis_model"] and not int(p["basis"]):
            raise HsicompError(f"codec {self.name!r}: basis_model needs basis > 0 (the "
                               f"number of its vectors used)")
        return config, iterations

    def _threads(self) -> None:
        if int(self.params["threads"]) > 0:
            import torch

            torch.set_num_threads(int(self.params["threads"]))

    def encode(self, cube: np.ndarray, delta: int, bit_depth: int,
               band_list: list[int] | None = None) -> bytes:
        """Overfit a model to the cube and code it; return complete .hsic bytes."""
        import torch

        from hsicomp.models import coolchic as cc

        cube = self.check_input(cube, delta, bit_depth, band_list)
        config, iterations = self.settings()
        self._threads()
        bands, rows, cols = cube.shape
        k = int(self.params["basis"])
        if k > bands:
            raise HsicompError(f"codec {self.name!r}: basis {k} exceeds the {bands} bands")
        x = cube.astype(np.float64)
        scale = np.float32(max(float(x.std()), 1.0))
        trained = param_basis(self, bands)
        if k:  # the target is the cube's first k KLT coefficients, in units of scale
            if trained is None:
                mean, values, vectors, spectra = eigenbasis(cube)
            else:
                mean, vectors = trained.mean.astype(np.float64), trained.vectors
                spectra = x.reshape(bands, -1) - mean[:, None]
            offset = np.float32(0.0)
            coefficients = (vectors[:, :k].T @ spectra) / float(scale)
            target = torch.from_numpy(coefficients.astype(np.float32).reshape(k, rows, cols))
        else:
            offset = np.float32(x.mean())
            target = torch.from_numpy((cube.astype(np.float32) - offset) / scale)
        settings = cc.FitSettings(lam=float(self.params["lam"]), iterations=iterations,
                                    lr=float(self.params["lr"]), seed=int(self.params["seed"]))
        start = time.perf_counter()
        model, history = cc.fit(target, config, settings, target.mean(dim=(1, 2)))
        qm, q_loss = cc.quantize(model, target, settings.lam)
        basis = None
        if trained is not None:
            basis = SpectralBasis.trained(trained, k)
        elif k:
            err = (qm.reconstruct() - target.numpy()).reshape(k, -1).astype(np.float64)
            err = np.mean(err * err, axis=1) * float(scale) ** 2
            bits = basis_fraction_bits(values[:k], err, bands)
            basis = choose_basis(mean, vectors[:, :k], bits, qm.reconstruct().reshape(k, -1),
                                 cube, float(scale), settings.lam, int(bit_depth))
        seconds = time.perf_counter() - start
        self.last_stats = {}
        side, payload, tables = self._pack_model(qm, offset, scale, basis, trained)
        data = self.pack(self.make_header(cube, delta, bit_depth, band_list), side, payload,
                         self._symbols(qm, basis))
        self.last_reconstruction = self._output(qm, offset, scale, bit_depth, basis)
        self.last_stats |= {
            "train_loss": history[-1], "loss_history": history, "quantized_loss": q_loss,
            "train_seconds": seconds,
            "macs_per_sample": cc.decoder_macs(config, bands, rows, cols, k),
            "latent_tables": tables, "payload_bytes": len(payload), "side_bytes": len(side),
            "config": config.as_dict(), "iterations": iterations}
        return data

    def _pack_model(self, qm: Any, offset: np.float32, scale: np.float32,
                    basis: SpectralBasis | None = None,
                    model: SpectralBasisModel | None = None
                    ) -> tuple[bytes, bytes, np.ndarray]:
        """Side info, payload and the latent table indices of a quantised model (the ideal
        code lengths of weights and latents go to ``last_stats``)."""
        from hsicomp.entropy import arm as carm
        from hsicomp.entropy.laplace_tables import PRECISION

        codes, parts, tables = self._intervals(qm)
        bits = [float(np.sum(PRECISION - np.log2(iv[1]))) for iv in parts]
        self.last_stats["weight_bits"] = sum(bits[:len(codes)])
        self.last_stats["latent_bits"] = sum(bits[len(codes):])
        ints = [getattr(qm.config, k) for k in _CONFIG_FIELDS]
        if model is not None:
            ints.append(qm.bands)
        elif basis is not None:
            basis_ints, mean_stream, matrix_stream = basis.pack()
            ints += [len(basis.bits), *basis_ints]
            self.last_stats["basis_bytes"] = len(mean_stream) + len(matrix_stream)
        for (_, k), (j, r_max) in zip(qm.tensors, codes, strict=True):
            ints += [k, j, r_max]
        if model is not None:
            side = b"".join([bytes([TRAINED_LAYOUT_VERSION]), _SCALE.pack(float(scale)),
                             model.digest, encode_varints(ints)])
        elif basis is None:
            side = bytes([LAYOUT_VERSION]) + _NORM.pack(float(offset), float(scale)) \
                + encode_varints(ints)
        else:
            side = b"".join([bytes([BASIS_LAYOUT_VERSION]), _SCALE.pack(float(scale)),
                             encode_varints([len(mean_stream), len(matrix_stream)]),
                             mean_stream, matrix_stream, encode_varints(ints)])
        return side, carm.seal_intervals(parts), tables

    @staticmethod
    def _intervals(qm: Any, codes: list[tuple[int, int]] | None = None
                   ) -> tuple[list[tuple[int, int]], list[np.ndarray], np.ndarray]:
        """Weight tables ``(j, r_max)`` (given, or chosen when None), the coding intervals
        of weights and latents and the latent table indices of a quantised model."""
        from hsicomp.entropy import arm as carm
        from hsicomp.entropy.laplace_tables import geometric_cdf, latent_cdfs
        from hsicomp.models import coolchic as cc

        count = len(qm.tensors)
        chosen, parts = [], []
        for idx, (q, _) in enumerate(qm.tensors):
            sym = cc.weight_symbols(idx, count, q).ravel()
            j, r_max = codes[idx] if codes is not None else cc.weight_code(sym)[:2]
            chosen.append((j, r_max))
            parts.append(carm.symbol_intervals(sym + r_max, geometric_cdf(j, r_max)))
        arm = qm.integer_arm()
        offsets = qm.config.offsets()
        tables = []
        for grid in qm.latents:
            iv, t = carm.grid_intervals(grid, arm, offsets, latent_cdfs())
            parts.append(iv)
            tables.append(t)
        return chosen, parts, np.concatenate(tables)

    @staticmethod
    def _symbols(qm: Any, basis: SpectralBasis | None = None) -> list[np.ndarray]:
        """What the check value covers: the integer weights, the integer latents, then the
        basis integers (mean and eigenvectors) when there is a basis."""
        extra = basis.symbols() if basis is not None else []
        return [q for q, _ in qm.tensors] + list(qm.latents) + extra

    @staticmethod
    def _output(qm: Any, offset: float, scale: float, bit_depth: int,
                basis: SpectralBasis | None = None) -> np.ndarray:
        if basis is not None:
            c = qm.reconstruct().reshape(qm.bands, -1)
            out = basis.synthesis(c, scale, bit_depth)
            return out.reshape(out.shape[0], qm.rows, qm.cols)
        x = qm.reconstruct().astype(np.float64) * float(scale) + float(offset)
        return np.clip(np.rint(np.nan_to_num(x)), 0, (1 << bit_depth) - 1).astype(np.uint16)

    def decode(self, data: bytes, source: str = "input") -> np.ndarray:
        """Decode .hsic bytes written by this codec."""
        header, side, payload = self.read_container(data, source)
        self._threads()
        qm, offset, scale, _, basis = self.decode_model(header, side, payload, source)
        self.verify_check(header, self._symbols(qm, basis), source)
        return self.check_output(self._output(qm, offset, scale, header.bit_depth, basis),
                                 header, source)

    def decode_model(self, header: Any, side: bytes, payload: bytes, source: str
                     ) -> tuple[Any, float, float, np.ndarray, SpectralBasis | None]:
        """Quantised model, offset, scale, latent table indices and spectral basis (None
        without one) of a file's contents."""
        from hsicomp.entropy import arm as carm
        from hsicomp.entropy.laplace_tables import geometric_cdf, latent_cdfs
        from hsicomp.models import coolchic as cc

        config, offset, scale, specs, basis = self._read_side(side, header.bands, source)
        _, rows, cols = header.shape
        bands = header.bands if basis is None else len(basis.bits)
        try:
            dec = carm.RangeDecoder(payload)
            shapes = cc.tensor_shapes(config, bands)
            tensors = []
            for idx, ((k, j, r_max), shape) in enumerate(zip(specs, shapes, strict=True)):
                n = int(np.prod(shape))
                sym = dec.symbols(geometric_cdf(j, r_max), n) - r_max
                q = cc.weight_values(idx, len(shapes), sym.reshape(shape))
                tensors.append((q, k))
            qm = cc.QuantizedCoolChic(config, bands, rows, cols, [], tensors)
            arm = qm.integer_arm()
            offsets = config.offsets()
            tables = []
            for shape in cc.grid_shapes(config, rows, cols):
                grid, t = dec.grid(shape, arm, offsets, latent_cdfs())
                qm.latents.append(grid)
                tables.append(t)
            if not dec.finished():
                raise ValueError("data left over after the last latent")
            # a stream decodes only from exactly the words the encoder writes
            _, parts, _ = self._intervals(qm, [(j, r_max) for _, j, r_max in specs])
            if carm.seal_intervals(parts) != payload:
                raise ValueError("the stream is not the coding of its symbols")
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt payload ({exc})") from None
        return qm, offset, scale, np.concatenate(tables), basis

    def _read_side(self, side: bytes, bands: int, source: str
                   ) -> tuple[Any, float, float, list[tuple[int, int, int]],
                              SpectralBasis | None]:
        """Architecture, offset, scale, per-tensor (k, j, r_max) and spectral basis (None
        without one) of the side info."""
        from hsicomp.entropy.laplace_tables import NGEOMETRIC
        from hsicomp.models import coolchic as cc

        config, offset, scale, rest, streams = self._read_config(side, source)
        basis = None
        if isinstance(streams, bytes):  # the digest of a trained basis
            k = rest[0] if rest else 0
            if not 1 <= k <= min(bands, MAX_BASIS):
                raise HsicompError(f"{source}: corrupt side info (basis of {k} vectors)")
            basis = SpectralBasis.trained(coding_basis(self, streams, bands, source), k)
            rest, bands = rest[1:], k
        elif streams is not None:
            k = rest[0] if rest else 0
            if not 1 <= k <= min(bands, MAX_BASIS) or len(rest) < 1 + 2 * k:
                raise HsicompError(f"{source}: corrupt side info (basis of {k} vectors)")
            basis = read_basis(rest[1:1 + 2 * k], *streams, bands, source)
            rest, bands = rest[1 + 2 * k:], k
        shapes = cc.tensor_shapes(config, bands)
        if len(rest) != 3 * len(shapes):
            raise HsicompError(f"{source}: corrupt side info ({len(rest)} weight-code "
                               f"integers for {len(shapes)} tensors)")
        specs = [tuple(rest[i:i + 3]) for i in range(0, len(rest), 3)]
        for k, j, r_max in specs:
            if k not in cc.STEP_EXPONENTS or j >= NGEOMETRIC or r_max > cc.MAX_WEIGHT * 2:
                raise HsicompError(f"{source}: corrupt side info (bad weight code)")
        return config, offset, scale, specs, basis  # type: ignore[return-value]

    @classmethod
    def _read_config(cls, side: bytes, source: str
                     ) -> tuple[Any, float, float, list[int], tuple[bytes, bytes] | bytes | None]:
        """Architecture, offset, scale, the remaining side-info integers and the basis
        streams (mean, matrix; the sha256 of a trained basis; None without a basis)."""
        from hsicomp.models import coolchic as cc

        streams: tuple[bytes, bytes] | bytes | None = None
        trained_end = 1 + _SCALE.size + DIGEST_BYTES
        if side[:1] == bytes([TRAINED_LAYOUT_VERSION]) and len(side) >= trained_end:
            offset, (scale,) = 0.0, _SCALE.unpack_from(side, 1)
            streams = side[1 + _SCALE.size:trained_end]
            data = side[trained_end:]
        elif side[:1] == bytes([BASIS_LAYOUT_VERSION]) and len(side) >= 1 + _SCALE.size:
            offset, (scale,) = 0.0, _SCALE.unpack_from(side, 1)
            lengths, pos = read_varints(side, 1 + _SCALE.size, 2, source)
            end = pos + lengths[0] + lengths[1]
            if end > len(side):
                raise HsicompError(f"{source}: corrupt side info (basis streams truncated)")
            streams = (side[pos:pos + lengths[0]], side[pos + lengths[0]:end])
            data = side[end:]
        else:
            if len(side) < _FIXED_SIDE:
                raise HsicompError(f"{source}: corrupt side info ({len(side)} bytes)")
            if side[0] != LAYOUT_VERSION:
                raise HsicompError(f"{source}: unsupported {cls.name} layout version "
                                   f"{side[0]}")
            offset, scale = _NORM.unpack_from(side, 1)
            data = side[_FIXED_SIDE:]
        if not (np.isfinite(offset) and np.isfinite(scale)):
            raise HsicompError(f"{source}: corrupt side info (normalisation not finite)")
        ints = decode_varints(data, sum(1 for b in data if not b & 0x80), source,
                              "side-info integers")
        if len(ints) < len(_CONFIG_FIELDS):
            raise HsicompError(f"{source}: corrupt side info (truncated)")
        config = cc.CoolChicConfig(**dict(zip(_CONFIG_FIELDS, ints, strict=False)))
        try:
            config.validate()
        except ValueError as exc:
            raise HsicompError(f"{source}: corrupt side info ({exc})") from None
        return config, offset, scale, ints[len(_CONFIG_FIELDS):], streams

    @classmethod
    def describe_side_info(cls, side: bytes) -> list[tuple[str, str]]:
        """Readable fields of a coolchic file's side info (for ``hsicomp info``)."""
        try:
            config, offset, scale, rest, streams = cls._read_config(side, "side info")
        except HsicompError:
            return [("side_info", "corrupt")]
        basis: list[tuple[str, str]] = []
        if isinstance(streams, bytes) and rest:
            basis = [("basis", str(rest[0])), ("basis_model_sha256", streams.hex())]
            rest = rest[1:]
        elif streams is not None and rest:
            k = rest[0]
            basis = [("basis", str(k)), ("basis_bytes", str(sum(map(len, streams))))]
            rest = rest[1 + 2 * k:]
        else:
            basis = [("offset", f"{offset:.6g}")]
        steps = ",".join(str(k) for k in rest[0::3])
        return [*((k, str(v)) for k, v in config.as_dict().items()), *basis,
                ("scale", f"{scale:.6g}"), ("weight_step_exponents", steps)]
