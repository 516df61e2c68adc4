"""Learned transform codec with GDN for hyperspectral cubes (the "basic autoencoder").

Network (``TransformCodec``), for a cube ``(B, bands, H, W)``:

* spectral front end: a 1x1 conv ``bands -> spectral_channels`` (keeps 202 bands cheap);
* analysis: a residual block ``spectral -> N`` with stride 2 (conv3x3 + LeakyReLU(0.2),
  conv3x3 + GDN, 1x1 skip), then ``stages - 2`` more such blocks ``N -> N``, a simplified
  attention block (sigmoid mask branch times main branch, plus skip) after the first block
  and before the last conv when ``attention`` is on, and a final stride-2 conv3x3
  ``N -> M``: total downsampling ``2**stages``;
* synthesis: the mirror image: sub-pixel conv ``M -> N`` (conv3x3 to 4x channels and pixel
  shuffle), attention, ``stages - 1`` upsampling residual blocks (sub-pixel conv3x3 +
  LeakyReLU, conv3x3 + inverse GDN, sub-pixel 1x1 skip) ending at ``spectral_channels``,
  attention, and a 1x1 spectral back end ``spectral -> bands``.

Rows and columns are padded (replicate) to a multiple of ``2**stages`` before the analysis
and the reconstruction is cropped back, so any size works. The latent ``y`` is quantised
with additive uniform noise ``U(-1/2, 1/2)`` in training mode and by rounding in eval mode;
``FactorizedEntropyModel`` gives its likelihoods (the rate).

With ``levels > 0`` the model has gain units (:mod:`hsicomp.models.gain`): the latent is
multiplied channel-wise by the gain vector of a real ``level`` before quantisation (the
entropy model sees the gained latent) and the quantised latent by the inverse gain vector
before synthesis; every call then takes ``level``.

With ``ohm_symbols > 0`` the rounding and the factorized prior are replaced by One-Hot-Max
quantisation (:mod:`hsicomp.models.ohm`): ``ohm_channels`` channels (0: ``M``) of
``ohm_symbols`` candidates each, with a static pmf per channel; with ``ohm_min_channels``
set, the model is trained for adaptive rate and every call may take ``channels`` (how many
channels are sent, ``ohm_min_channels`` .. ``ohm_channels``). ``CodecOutput.y_hat`` is then
the dequantised latent and ``likelihoods`` the symbols' pmf entries.

Normalisation: the network works on ``(x - band_offset) / band_scale`` per band. Both are
buffers of the model (saved in its ``state_dict``; set them once from training data with
``set_normalization(*band_statistics(cubes))``), so a decoder reproduces them from the model
file and nothing per image is stored. The defaults (offset 0, scale 1) leave the input as is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsicomp.entropy.factorized import (
    FactorizedEntropyModel,
    FrozenTables,
    decode_latents,
    encode_latents,
)
from hsicomp.models.gain import GainUnits
from hsicomp.models.ohm import OneHotMax

__all__ = [
    "GDN",
    "PRESETS",
    "AttentionBlock",
    "CodecOutput",
    "ResidualBlock",
    "ResidualUpBlock",
    "TransformCodec",
    "TransformCodecConfig",
    "band_statistics",
    "rate_distortion_loss",
]


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient still flows where it would raise ``x``."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None


class GDN(nn.Module):
    """Generalized divisive normalization: ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``.

    With ``inverse=True`` the layer multiplies instead (inverse GDN). ``beta >= beta_min``
    and ``gamma >= 0`` hold for any stored parameter values: the effective parameters are
    ``max(p, sqrt(min + eps^2))^2 - eps^2`` of the stored ones ``p``.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6,
                 gamma_init: float = 0.1, reparam_offset: float = 2.0 ** -18) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_min = float(beta_min)
        self.pedestal = float(reparam_offset) ** 2
        self.beta_bound = (self.beta_min + self.pedestal) ** 0.5
        self.gamma_bound = float(reparam_offset)
        self.beta_param = nn.Parameter(torch.full((channels,), (1.0 + self.pedestal) ** 0.5))
        self.gamma_param = nn.Parameter(
            torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    @property
    def beta(self) -> Tensor:
        """Effective beta (>= beta_min), shape (channels,)."""
        return _LowerBound.apply(self.beta_param, self.beta_bound) ** 2 - self.pedestal

    @property
    def gamma(self) -> Tensor:
        """Effective gamma (>= 0), shape (channels, channels)."""
        return _LowerBound.apply(self.gamma_param, self.gamma_bound) ** 2 - self.pedestal

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` (B, channels, H, W)."""
        c = x.shape[1]
        norm = F.conv2d(x * x, self.gamma.reshape(c, c, 1, 1), self.beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _subpel(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(_conv(cin, 4 * cout, k), nn.PixelShuffle(2))


class ResidualBlock(nn.Module):
    """conv3x3 (stride) + LeakyReLU(0.2), conv3x3 + GDN, plus a 1x1 (strided) skip."""

    def __init__(self, cin: int, cout: int, stride: int = 2) -> None:
        super().__init__()
        self.main = nn.Sequential(_conv(cin, cout, 3, stride), nn.LeakyReLU(0.2),
                                  _conv(cout, cout), GDN(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else _conv(cin, cout, 1, stride))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return self.main(x) + self.skip(x)


class ResidualUpBlock(nn.Module):
    """Sub-pixel conv3x3 (x2) + LeakyReLU(0.2), conv3x3 + inverse GDN, sub-pixel 1x1 skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(_subpel(cin, cout), nn.LeakyReLU(0.2),
                                  _conv(cout, cout), GDN(cout, inverse=True))
        self.skip = _subpel(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block (doubles rows and columns)."""
        return self.main(x) + self.skip(x)


class _Bottleneck(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        h = max(n // 2, 1)
        self.body = nn.Sequential(_conv(n, h, 1), nn.LeakyReLU(0.2), _conv(h, h),
                                  nn.LeakyReLU(0.2), _conv(h, n, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class AttentionBlock(nn.Module):
    """Simplified attention: ``x + main(x) * sigmoid(mask(x))`` (residual-unit branches)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.main = _Bottleneck(n)
        self.mask = nn.Sequential(_Bottleneck(n), _conv(n, n, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block."""
        return x + self.main(x) * torch.sigmoid(self.mask(x))


@dataclass(frozen=True)
class TransformCodecConfig:
    """Sizes of a ``TransformCodec``; downsampling is ``2**stages``."""

    bands: int = 202
    spectral_channels: int = 32
    hidden_channels: int = 64  # N
    latent_channels: int = 32  # M
    stages: int = 3
    attention: bool = True
    levels: int = 0  # gain-unit levels (0: no gain units, the plain gdn model)
    ohm_symbols: int = 0  # One-Hot-Max candidates per channel (0: rounding, factorized prior)
    ohm_channels: int = 0  # One-Hot-Max channels (0: latent_channels)
    ohm_min_channels: int | None = None  # adaptive rate: fewest channels sent (None: fixed)
    ohm_temperature: float = 1.0  # initial softmax temperature of the OHM gradient

    def __post_init__(self) -> None:
        if min(self.bands, self.spectral_channels, self.hidden_channels,
               self.latent_channels, self.stages) < 1:
            raise ValueError(f"all sizes of {self} must be >= 1")
        if self.levels < 0:
            raise ValueError(f"levels of {self} must be >= 0")
        if self.ohm_symbols:
            if self.ohm_symbols < 2 or self.ohm_channels < 0 or self.levels:
                raise ValueError(f"{self}: OHM needs >= 2 symbols, channels >= 0 and no "
                                 "gain units")
            if self.ohm_min_channels is not None and \
                    not 0 <= self.ohm_min_channels <= self.ohm_channel_count:
                raise ValueError(f"{self}: ohm_min_channels must be in "
                                 f"0..{self.ohm_channel_count}")

    @property
    def ohm_channel_count(self) -> int:
        """One-Hot-Max channels C (0 without OHM)."""
        if not self.ohm_symbols:
            return 0
        return self.ohm_channels or self.latent_channels

    @property
    def ohm_fewest_channels(self) -> int:
        """Fewest OHM channels a file may send (all of them at fixed rate)."""
        if self.ohm_min_channels is None:
            return self.ohm_channel_count
        return self.ohm_min_channels

    @property
    def downsampling(self) -> int:
        """Factor between cube and latent rows/columns."""
        return 1 << self.stages

    def with_bands(self, bands: int) -> TransformCodecConfig:
        """This configuration for another number of bands."""
        return replace(self, bands=bands)

    def with_levels(self, levels: int) -> TransformCodecConfig:
        """This configuration with ``levels`` gain-unit levels."""
        return replace(self, levels=levels)

    def with_ohm(self, symbols: int, channels: int = 0,
                 min_channels: int | None = None) -> TransformCodecConfig:
        """This configuration with One-Hot-Max quantisation (see the module docstring)."""
        return replace(self, ohm_symbols=symbols, ohm_channels=channels,
                       ohm_min_channels=min_channels)


PRESETS: dict[str, TransformCodecConfig] = {
    "tiny": TransformCodecConfig(spectral_channels=16, hidden_channels=32,
                                 latent_channels=32, stages=2, attention=False),
    "small": TransformCodecConfig(spectral_channels=32, hidden_channels=64,
                                  latent_channels=64, stages=3, attention=True),
    "paper": TransformCodecConfig(spectral_channels=128, hidden_channels=192,
                                  latent_channels=192, stages=4, attention=True),
}
"""Named sizes: ``tiny`` and ``small`` train on a laptop CPU in minutes; ``paper`` is the
published size (N = M = 192, downsampling 16, two attention blocks each side)."""


class CodecOutput(NamedTuple):
    """Reconstruction (normalised units), quantised latent and its likelihoods."""

    x_hat: Tensor
    y_hat: Tensor
    likelihoods: Tensor


class TransformCodec(nn.Module):
    """Analysis/synthesis transforms with GDN and a factorized entropy model; see module doc."""

    def __init__(self, config: TransformCodecConfig) -> None:
        super().__init__()
        self.config = config
        s, n, m = config.spectral_channels, config.hidden_channels, config.latent_channels
        att = config.attention
        enc: list[nn.Module] = [_conv(config.bands, s, 1)]
        dec: list[nn.Module] = [_subpel(m, n if config.stages > 1 else s)]
        if config.stages > 1:
            enc.append(ResidualBlock(s, n))
            if att:
                enc.append(AttentionBlock(n))
            enc += [ResidualBlock(n, n) for _ in range(config.stages - 2)]
            if att:
                enc.append(AttentionBlock(n))
                dec.append(AttentionBlock(n))
            dec += [ResidualUpBlock(n, n) for _ in range(config.stages - 2)]
            if att:
                dec.append(AttentionBlock(n))
            dec.append(ResidualUpBlock(n, s))
        enc.append(_conv(n if config.stages > 1 else s, m, 3, 2))
        dec.append(_conv(s, config.bands, 1))
        self.analysis = nn.Sequential(*enc)
        self.synthesis = nn.Sequential(*dec)
        self.entropy: FactorizedEntropyModel | OneHotMax = (
            OneHotMax(m, config.ohm_channel_count, config.ohm_symbols, config.ohm_temperature)
            if config.ohm_symbols
            else FactorizedEntropyModel(m))
        self.gain_units = GainUnits(config.levels, m) if config.levels else None
        self.register_buffer("band_offset", torch.zeros(config.bands))
        self.register_buffer("band_scale", torch.ones(config.bands))

    def set_normalization(self, offset: Tensor | np.ndarray,
                          scale: Tensor | np.ndarray) -> None:
        """Set the per-band offset and scale (scale > 0) the network input is divided by."""
        off = torch.as_tensor(np.asarray(offset, dtype=np.float32)).reshape(-1)
        sc = torch.as_tensor(np.asarray(scale, dtype=np.float32)).reshape(-1)
        if off.numel() != self.config.bands or sc.numel() != self.config.bands:
            raise ValueError(f"need {self.config.bands} offsets and scales")
        if not bool(torch.all(sc > 0)):
            raise ValueError("band scales must be positive")
        self.band_offset.copy_(off)
        self.band_scale.copy_(sc)

    def normalize(self, x: Tensor) -> Tensor:
        """Raw samples (B, bands, H, W) to network units."""
        return (x - self.band_offset.view(1, -1, 1, 1)) / self.band_scale.view(1, -1, 1, 1)

    def denormalize(self, x: Tensor) -> Tensor:
        """Network units back to raw samples (floats)."""
        return x * self.band_scale.view(1, -1, 1, 1) + self.band_offset.view(1, -1, 1, 1)

    def latent_shape(self, rows: int, cols: int,
                     channels: int | None = None) -> tuple[int, int, int]:
        """Coded latent (M, h, w) of a cube with ``rows`` x ``cols``.

        With OHM the first entry is the number of channels sent (``channels``, default C).
        """
        f = self.config.downsampling
        n = self.channels_sent(channels)
        return n or self.config.latent_channels, -(-rows // f), -(-cols // f)

    def channels_sent(self, channels: int | None) -> int | None:
        """OHM channels a call sends (``channels``, checked; default all); None without OHM."""
        c = self.config
        if not c.ohm_symbols:
            if channels is not None:
                raise ValueError("only an OHM model takes channels")
            return None
        if channels is None:
            return c.ohm_channel_count
        if not c.ohm_fewest_channels <= channels <= c.ohm_channel_count:
            raise ValueError(f"channels must be in {c.ohm_fewest_channels}.."
                             f"{c.ohm_channel_count}, got {channels}")
        return channels

    def analyse(self, x: Tensor) -> Tensor:
        """Continuous latent of normalised ``x`` (B, bands, H, W), padded as needed."""
        if x.ndim != 4 or x.shape[1] != self.config.bands:
            raise ValueError(f"expected (B, {self.config.bands}, H, W), got {tuple(x.shape)}")
        f = self.config.downsampling
        rows, cols = x.shape[-2:]
        pad_r, pad_c = (-rows) % f, (-cols) % f
        if pad_r or pad_c:
            x = F.pad(x, (0, pad_c, 0, pad_r), mode="replicate")
        return self.analysis(x)

    def synthesise(self, y_hat: Tensor, rows: int, cols: int) -> Tensor:
        """Reconstruction (normalised units) of ``rows`` x ``cols`` from a quantised latent."""
        return self.synthesis(y_hat)[..., :rows, :cols]

    def gains(self, level: float | None) -> tuple[Tensor, Tensor] | None:
        """Gain and inverse gain vectors at ``level`` (None without gain units)."""
        if self.gain_units is None:
            if level is not None:
                raise ValueError("this model has no gain units (no level)")
            return None
        if level is None:
            raise ValueError("a model with gain units needs a level")
        return self.gain_units.vectors(level)

    def forward(self, x: Tensor, level: float | None = None,
                channels: int | None = None) -> CodecOutput:
        """Noisy (training) or rounded (eval) latent, its likelihoods and the reconstruction."""
        gains, n = self.gains(level), self.channels_sent(channels)
        y = self.analyse(x)
        if isinstance(self.entropy, OneHotMax):
            y_hat, likelihoods = self.entropy(y, n)
            return CodecOutput(self.synthesise(y_hat, *x.shape[-2:]), y_hat, likelihoods)
        if gains is not None:
            y = y * gains[0].view(1, -1, 1, 1)
        noise = torch.empty_like(y).uniform_(-0.5, 0.5) if self.training else None
        y_hat = y + noise if noise is not None else torch.round(y)
        likelihoods = self.entropy(y_hat)
        y_syn = y_hat if gains is None else y_hat * gains[1].view(1, -1, 1, 1)
        return CodecOutput(self.synthesise(y_syn, *x.shape[-2:]), y_hat, likelihoods)

    @torch.no_grad()
    def symbols(self, x: Tensor, level: float | None = None,
                channels: int | None = None) -> np.ndarray:
        """The integer latent symbols (channels, h, w) of one normalised cube (1, bands, H,
        W): what ``compress`` codes and ``decode_symbols`` gives back."""
        if x.shape[0] != 1:
            raise ValueError("compress takes one cube (batch size 1)")
        gains, n = self.gains(level), self.channels_sent(channels)
        y = self.analyse(x)
        if isinstance(self.entropy, OneHotMax):
            return self.entropy.symbols_of(y, n)[0].to(torch.int64).numpy()
        if gains is not None:
            y = y * gains[0].view(1, -1, 1, 1)
        return torch.round(y)[0].to(torch.int64).numpy()

    def _tables(self, channels: int) -> FrozenTables:
        return (self.entropy.tables(channels) if isinstance(self.entropy, OneHotMax)
                else self.entropy.tables())

    @torch.no_grad()
    def compress(self, x: Tensor, level: float | None = None,
                 channels: int | None = None) -> bytes:
        """Bytes of one normalised cube (1, bands, H, W); needs ``entropy.freeze()`` first."""
        return self.encode_symbols(self.symbols(x, level, channels))

    def encode_symbols(self, symbols: np.ndarray) -> bytes:
        """Bytes of latent symbols (channels, h, w) from ``symbols``."""
        return encode_latents(symbols, self._tables(symbols.shape[0]))

    def decode_symbols(self, data: bytes, rows: int, cols: int,
                       channels: int | None = None) -> np.ndarray:
        """The latent symbols coded in ``data`` (the output of ``compress``)."""
        shape = self.latent_shape(rows, cols, channels)
        return decode_latents(data, shape, self._tables(shape[0]))

    @torch.no_grad()
    def reconstruct(self, symbols: np.ndarray, rows: int, cols: int,
                    level: float | None = None) -> Tensor:
        """Normalised reconstruction (1, bands, rows, cols) of decoded latent symbols."""
        if isinstance(self.entropy, OneHotMax):
            one_hot = self.entropy.one_hot(torch.from_numpy(symbols.astype(np.int64))[None])
            return self.synthesise(self.entropy.dequantize(one_hot), rows, cols)
        y_hat = torch.from_numpy(symbols.astype(np.float32)).unsqueeze(0)
        gains = self.gains(level)
        if gains is not None:
            y_hat = y_hat * gains[1].view(1, -1, 1, 1)
        return self.synthesise(y_hat, rows, cols)

    @torch.no_grad()
    def decompress(self, data: bytes, rows: int, cols: int, level: float | None = None,
                   channels: int | None = None) -> Tensor:
        """Normalised reconstruction (1, bands, rows, cols) of ``compress`` output."""
        return self.reconstruct(self.decode_symbols(data, rows, cols, channels), rows, cols,
                                level)


def band_statistics(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation (float32, std >= 1e-3) of cubes.

    ``x`` is (bands, H, W) or (B, bands, H, W); use the result in ``set_normalization``.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"expected (bands, H, W) or (B, bands, H, W), got {a.shape}")
    mean = a.mean(axis=(0, 2, 3))
    std = np.maximum(a.std(axis=(0, 2, 3)), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)


def rate_distortion_loss(x: Tensor, out: CodecOutput,
                         lmbda: float) -> tuple[Tensor, Tensor, Tensor]:
    """``bits per sample + lmbda * MSE`` (normalised units); returns (loss, bps, mse).

    Bits per sample divides the latent bits by ``x.numel()`` (batch x bands x rows x cols).
    """
    bps = FactorizedEntropyModel.bits(out.likelihoods) / x.numel()
    mse = F.mse_loss(out.x_hat, x)
    return bps + lmbda * mse, bps, mse
