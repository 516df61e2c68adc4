"""Cool-Chic for hyperspectral cubes: a small model overfitted to one cube at encode time.

Representation
    ``grids`` latent grids of ``channels`` features each, grid ``k`` of size
    ``ceil(rows / 2**k) x ceil(cols / 2**k)``. The decoder upsamples them to full
    resolution (fixed bilinear 2x steps, coarsest first: the stack of coarser grids is
    upsampled, cropped and joined with the next grid) and a synthesis MLP of 1x1 layers
    (``synth_layers`` hidden layers of ``synth_hidden`` with ReLU) maps the
    ``grids * channels`` values of every pixel to all bands of the normalised cube
    ``(x - offset) / scale`` (one offset and one scale for the cube; per-band levels are the
    synthesis output biases).

Probability model
    One ARM shared by all grids (see :mod:`hsicomp.entropy.arm`): an MLP over the causal
    neighbours of a latent in its grid giving a Laplace mean and log2 scale. Training uses
    it in float; coding uses its fixed-point version with the quantised weights.

Training (:func:`fit`)
    Adam on ``D + lam * R``: ``D`` the MSE of the normalised cube, ``R`` the latent bits
    under the ARM's Laplace per cube sample. Latents are clamped to ``+-LATENT_MAX``;
    quantisation is additive uniform noise for the first ``noise_fraction`` of the steps,
    then ``softround(softround(y, T) + noise, T)`` with the temperature ``T`` annealed from
    0.3 to 0.1, then straight-through hard rounding for the last ``hard_fraction``; the
    learning rate follows a cosine from ``lr`` down to ``lr / 20``. Deterministic for a
    seed on CPU with a fixed number of torch threads.

Network quantisation (:func:`quantize`)
    Every weight and bias tensor gets a step ``2**-k`` (``k`` from ``STEP_EXPONENTS``)
    chosen greedily, tensor by tensor, to minimise ``D + lam * (R_latents + R_weights)``
    with the latents hard-rounded; the integers are coded with the two-sided geometric
    tables of :mod:`hsicomp.entropy.laplace_tables` (the output layer as differences
    between neighbouring bands).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsicomp.entropy.arm import FRAC_BITS, IntegerArm, context_offsets
from hsicomp.entropy.laplace_tables import (
    LATENT_MAX,
    LOG2_SCALE_MAX,
    LOG2_SCALE_MIN,
    NGEOMETRIC,
    geometric_scale,
)
from hsicomp.errors import HsicompError

__all__ = [
    "PRESETS",
    "STEP_EXPONENTS",
    "CoolChic",
    "CoolChicConfig",
    "QuantizedCoolChic",
    "FitSettings",
    "decoder_macs",
    "fit",
    "grid_shapes",
    "quantize",
    "synthesize",
    "tensor_shapes",
    "weight_code",
    "weight_symbols",
    "weight_values",
]

#: Candidate weight steps ``2**-k``.
STEP_EXPONENTS = tuple(range(2, 13))
#: Largest quantised weight magnitude (larger ones rule a step out).
MAX_WEIGHT = (1 << 15) - 1


@dataclass(frozen=True)
class CoolChicConfig:
    """Architecture of one overfitted model (all stored in the file)."""

    grids: int = 5
    channels: int = 4
    context: int = 8
    channel_context: int = 1
    arm_hidden: int = 12
    synth_hidden: int = 16
    synth_layers: int = 2

    def validate(self) -> None:
        """ValueError when a field is out of range."""
        limits = {"grids": (1, 12), "channels": (1, 32), "context": (1, 24),
                  "channel_context": (0, 8), "arm_hidden": (1, 64), "synth_hidden": (1, 128),
                  "synth_layers": (0, 4)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {value!r}")

    def offsets(self) -> np.ndarray:
        """ARM context offsets ``(dc, dy, dx)``."""
        return context_offsets(self.context, min(self.channel_context, self.channels - 1))

    def as_dict(self) -> dict[str, int]:
        """The fields as a dict."""
        return asdict(self)


#: Named settings: ``default`` (a 202x64x64 cube in about a minute on one CPU thread) and
#: ``paper`` (closer to the published Cool-Chic sizes, for 202x128x128 cubes).
PRESETS: dict[str, dict] = {
    "default": {"config": CoolChicConfig(), "iterations": 2000},
    "paper": {"config": CoolChicConfig(grids=7, channels=4, context=12, channel_context=2,
                                       arm_hidden=12, synth_hidden=24, synth_layers=2),
              "iterations": 10000},
}


def grid_shapes(config: CoolChicConfig, rows: int, cols: int) -> list[tuple[int, int, int]]:
    """``(channels, h, w)`` of every latent grid, finest first."""
    return [(config.channels, -(-rows // (1 << k)), -(-cols // (1 << k)))
            for k in range(config.grids)]


def decoder_macs(config: CoolChicConfig, bands: int, rows: int, cols: int,
                 basis: int = 0) -> dict[str, float]:
    """Decoder multiply-adds per decoded sample (band-sample), by part and in total; with
    ``basis`` K > 0 the synthesis outputs K coefficients and a K-vector spectral basis
    turns them into the bands (K multiply-adds per sample)."""
    pixels = rows * cols
    shapes = grid_shapes(config, rows, cols)
    latents = sum(c * h * w for c, h, w in shapes)
    nctx = len(config.offsets())
    ah = config.arm_hidden
    arm = latents * (nctx * ah + ah * ah + 2 * ah)
    up = 0  # bilinear 2x: 4 multiply-adds per output value
    for k in range(config.grids - 1):
        _, h, w = shapes[k]
        up += 4 * (config.grids - 1 - k) * config.channels * h * w
    widths = [config.grids * config.channels] + [config.synth_hidden] * config.synth_layers
    widths.append(basis or bands)
    synth = pixels * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    samples = bands * pixels
    out = {"arm": arm / samples, "upsampling": up / samples, "synthesis": synth / samples}
    if basis:
        out["basis"] = float(basis)
    out["total"] = sum(out.values())
    return out


def upsample(grids: list[Tensor], shapes: list[tuple[int, int, int]]) -> Tensor:
    """Stack of all grids at full resolution, ``(grids * channels, rows, cols)``.

    Coarsest first: the stack so far is bilinearly upsampled by 2, cropped to the next
    grid's size and joined after that grid's channels (finest grid first in the result).
    """
    x = grids[-1][None]
    for k in range(len(grids) - 2, -1, -1):
        _, h, w = shapes[k]
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = torch.cat([grids[k][None], x[:, :, :h, :w]], dim=1)
    return x[0]


def synthesize(grids: list[Tensor], shapes: list[tuple[int, int, int]],
               layers: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Normalised cube ``(pixels, bands)`` from latent grids and synthesis (W, b) layers."""
    x = upsample(grids, shapes)
    x = x.reshape(x.shape[0], -1).T
    for i, (w, b) in enumerate(layers):
        x = F.linear(x, w, b)
        if i < len(layers) - 1:
            x = F.relu(x)
    return x


def arm_features(grid: Tensor, offsets: np.ndarray) -> Tensor:
    """ARM contexts of every latent of a ``(channels, h, w)`` grid, ``(channels*h*w, n)``."""
    c, h, w = grid.shape
    p = int(-offsets[:, 0].min())
    pad = 3
    x = F.pad(grid, (pad, pad, pad, 0))
    if p:
        x = torch.cat([x.new_zeros((p, *x.shape[1:])), x])
    cols = [x[p + dc:p + dc + c, pad + dy:pad + dy + h, pad + dx:pad + dx + w]
            for dc, dy, dx in offsets.tolist()]
    return torch.stack(cols, dim=-1).reshape(-1, len(cols))


def laplace_bits(q: Tensor, mu: Tensor, log2b: Tensor) -> Tensor:
    """Bits of ``q`` under Laplace(mu, 2**log2b) integrated over ``q +- 1/2`` (clamped)."""
    mu = mu.clamp(-LATENT_MAX, LATENT_MAX)
    b = torch.exp2(log2b.clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX))

    def cdf(t: Tensor) -> Tensor:
        z = (t - mu) / b
        return 0.5 - 0.5 * torch.sign(z) * torch.expm1(-z.abs())

    p = cdf(q + 0.5) - cdf(q - 0.5)
    return -torch.log2(p.clamp_min(2.0 ** -24)).sum()


def softround(y: Tensor, t: float) -> Tensor:
    """Differentiable rounding that tends to ``round`` as the temperature ``t`` goes to 0."""
    f = torch.floor(y)
    r = y - f - 0.5
    return f + 0.5 + torch.tanh(r / t) / (2.0 * math.tanh(0.5 / t))


class CoolChic(nn.Module):
    """Latent grids, float ARM and synthesis of one cube (training form)."""

    def __init__(self, config: CoolChicConfig, bands: int, rows: int, cols: int) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.bands, self.rows, self.cols = bands, rows, cols
        self.shapes = grid_shapes(config, rows, cols)
        self.offsets = config.offsets()
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in self.shapes])
        ah = config.arm_hidden
        self.arm = nn.ModuleList([nn.Linear(len(self.offsets), ah), nn.Linear(ah, ah),
                                  nn.Linear(ah, 2)])
        widths = [config.grids * config.channels] + [config.synth_hidden] * config.synth_layers
        self.synth = nn.ModuleList([nn.Linear(a, b) for a, b in zip(widths, widths[1:] + [bands],
                                                                    strict=True)])

    def arm_out(self, grid: Tensor) -> tuple[Tensor, Tensor]:
        """Float ARM: Laplace mean and log2 scale of every latent of a grid (flattened)."""
        x = arm_features(grid, self.offsets)
        for i, layer in enumerate(self.arm):
            x = layer(x)
            if i < 2:
                x = F.relu(x)
        return x[:, 0], x[:, 1]

    def rate(self, grids: list[Tensor]) -> Tensor:
        """Bits of (quantised or proxy) latent grids under the float ARM."""
        bits = grids[0].new_zeros(())
        for g in grids:
            mu, log2b = self.arm_out(g)
            bits = bits + laplace_bits(g.reshape(-1), mu, log2b)
        return bits

    def decode_float(self, grids: list[Tensor]) -> Tensor:
        """Normalised reconstruction ``(pixels, bands)`` with the float synthesis."""
        return synthesize(grids, self.shapes, [(m.weight, m.bias) for m in self.synth])


@dataclass
class FitSettings:
    """Optimisation settings of :func:`fit`."""

    lam: float = 0.01
    iterations: int = 2000
    lr: float = 0.04
    seed: int = 0
    noise_fraction: float = 0.6
    hard_fraction: float = 0.1


def _proxy(y: Tensor, step: int, s: FitSettings, gen: torch.Generator) -> Tensor:
    y = y.clamp(-LATENT_MAX, LATENT_MAX)
    n_noise = int(s.noise_fraction * s.iterations)
    n_hard = int(s.hard_fraction * s.iterations)
    if step < n_noise:
        return y + (torch.rand(y.shape, generator=gen) - 0.5)
    if step >= s.iterations - n_hard:
        return y + (torch.round(y) - y).detach()
    span = max(s.iterations - n_hard - n_noise, 1)
    t = 0.3 * (0.1 / 0.3) ** ((step - n_noise) / span)
    return softround(softround(y, t) + (torch.rand(y.shape, generator=gen) - 0.5), t)


def fit(target: Tensor, config: CoolChicConfig, settings: FitSettings,
        band_mean: Tensor | None = None) -> tuple[CoolChic, list[float]]:
    """Overfit a model to a normalised cube ``(bands, rows, cols)``; returns it and the loss
    (``D + lam * R``, R in bits per sample) every 100 steps and at the end."""
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    bands, rows, cols = target.shape
    model = CoolChic(config, bands, rows, cols)
    if band_mean is not None:
        with torch.no_grad():
            model.synth[-1].bias.copy_(band_mean)
    flat = target.reshape(bands, -1).T.contiguous()
    samples = target.numel()
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / settings.iterations)))
    history: list[float] = []
    for step in range(settings.iterations):
        grids = [_proxy(y, step, settings, gen) for y in model.latents]
        dist = F.mse_loss(model.decode_float(grids), flat)
        loss = dist + settings.lam * model.rate(grids) / samples
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == settings.iterations - 1:
            history.append(float(loss.detach()))
    return model, history


def _dpcm(q: np.ndarray) -> np.ndarray:
    """Differences along the first axis (the first row kept)."""
    out = q.copy()
    out[1:] -= q[:-1]
    return out


def _undo_dpcm(d: np.ndarray) -> np.ndarray:
    return np.cumsum(d, axis=0)


@dataclass
class QuantizedCoolChic:
    """Everything the decoder gets: integer latents and integer weights with their steps.

    ``tensors`` lists ``(ints, k)`` in coding order: the ARM's three (W, b) then the
    synthesis layers' (W, b), weights as ``(out, in)``.
    """

    config: CoolChicConfig
    bands: int
    rows: int
    cols: int
    latents: list[np.ndarray]
    tensors: list[tuple[np.ndarray, int]]

    def integer_arm(self) -> IntegerArm:
        """The fixed-point ARM."""
        t = self.tensors
        return IntegerArm([(t[2 * i][0], t[2 * i][1], t[2 * i + 1][0], t[2 * i + 1][1])
                           for i in range(3)])

    def synth_layers(self) -> list[tuple[Tensor, Tensor]]:
        """Dequantised synthesis layers (float32)."""
        t = [torch.from_numpy(q.astype(np.float32) * np.float32(2.0 ** -k))
             for q, k in self.tensors[6:]]
        return [(t[2 * i], t[2 * i + 1]) for i in range(len(t) // 2)]

    def reconstruct(self) -> np.ndarray:
        """Normalised reconstruction ``(bands, rows, cols)``, float32."""
        grids = [torch.from_numpy(v.astype(np.float32)) for v in self.latents]
        with torch.no_grad():
            x = synthesize(grids, grid_shapes(self.config, self.rows, self.cols),
                           self.synth_layers())
        return x.T.reshape(self.bands, self.rows, self.cols).numpy()


def tensor_shapes(config: CoolChicConfig, bands: int) -> list[tuple[int, ...]]:
    """Shapes of the coded tensors, in coding order."""
    ah, nctx = config.arm_hidden, len(config.offsets())
    shapes: list[tuple[int, ...]] = [(ah, nctx), (ah,), (ah, ah), (ah,), (2, ah), (2,)]
    widths = [config.grids * config.channels] + [config.synth_hidden] * config.synth_layers
    for a, b in zip(widths, widths[1:] + [bands], strict=True):
        shapes += [(b, a), (b,)]
    return shapes


def weight_symbols(index: int, count: int, q: np.ndarray) -> np.ndarray:
    """What is coded for tensor ``index`` of ``count``: the output layer as band differences."""
    return _dpcm(q) if index >= count - 2 else q


def weight_values(index: int, count: int, symbols: np.ndarray) -> np.ndarray:
    """Inverse of :func:`weight_symbols`."""
    return _undo_dpcm(symbols) if index >= count - 2 else symbols


def weight_code(symbols: np.ndarray) -> tuple[int, int, float]:
    """Weight table ``(j, r_max)`` for coding ``symbols`` and their approximate bits."""
    a = np.abs(symbols.astype(np.float64))
    r_max = int(a.max()) if a.size else 0
    best_j, best = 0, math.inf
    for j in range(NGEOMETRIC):
        r = math.exp(-1.0 / geometric_scale(j))
        bits = -a.size * math.log2((1 - r) / (1 + r)) - math.log2(r) * a.sum()
        if bits < best:
            best_j, best = j, bits
    return best_j, r_max, best


def quantize(model: CoolChic, target: Tensor, lam: float) -> tuple[QuantizedCoolChic, float]:
    """Round the latents, choose a step per network tensor (see module doc); returns the
    quantised model and its loss estimate ``D + lam * R`` (R in bits per sample).
    HsicompError when the fit diverged (non-finite latents, a tensor too large to code)."""
    bands, rows, cols = target.shape
    flat = target.reshape(bands, -1).T.contiguous()
    samples = target.numel()
    with torch.no_grad():
        if not all(bool(torch.isfinite(y).all()) for y in model.latents):
            raise HsicompError("coolchic: the fit diverged (latents are not finite); use a "
                               "smaller lr")
        grids = [torch.round(y.clamp(-LATENT_MAX, LATENT_MAX)) for y in model.latents]
        params = [p.detach().clone() for m in model.arm for p in (m.weight, m.bias)]
        params += [p.detach().clone() for m in model.synth for p in (m.weight, m.bias)]
        count = len(params)
        chosen: list[tuple[np.ndarray, int]] = []
        current = list(params)

        def arm_bits() -> float:
            bits = 0.0
            for g in grids:
                x = arm_features(g, model.offsets)
                for i in range(3):
                    x = F.linear(x, current[2 * i], current[2 * i + 1])
                    if i < 2:
                        x = F.relu(x)
                bits += float(laplace_bits(g.reshape(-1), x[:, 0], x[:, 1]))
            return bits

        def distortion() -> float:
            layers = [(current[i], current[i + 1]) for i in range(6, count, 2)]
            return float(F.mse_loss(synthesize(grids, model.shapes, layers), flat))

        lat_bits = arm_bits()
        dist = distortion()
        for idx in range(count):
            best = None
            for k in STEP_EXPONENTS:
                if idx < 6 and idx % 2 and k > chosen[idx - 1][1] + FRAC_BITS:
                    continue
                q = torch.round(params[idx] * 2.0 ** k)
                if not float(q.abs().max()) <= MAX_WEIGHT:  # too large, or NaN
                    continue
                current[idx] = q * 2.0 ** -k
                qi = q.to(torch.int64).numpy()
                w_bits = weight_code(weight_symbols(idx, count, qi))[2]
                if idx < 6:
                    lat_bits = arm_bits()
                else:
                    dist = distortion()
                loss = dist + lam * (lat_bits + w_bits) / samples
                if best is None or loss < best[0]:
                    best = (loss, k, qi, lat_bits, dist, w_bits)
            if best is None:
                raise HsicompError(f"coolchic: the fit diverged (network tensor {idx} is not "
                                   f"finite or too large to quantise); use a smaller lr")
            _, k, qi, lat_bits, dist, _ = best
            current[idx] = torch.from_numpy(qi.astype(np.float32)) * 2.0 ** -k
            chosen.append((qi, k))
        total_w = sum(weight_code(weight_symbols(i, count, q))[2]
                      for i, (q, _) in enumerate(chosen))
    latents = [g.to(torch.int64).numpy() for g in grids]
    qm = QuantizedCoolChic(model.config, bands, rows, cols, latents, chosen)
    return qm, dist + lam * (lat_bits + total_w) / samples
