"""One-Hot-Max quantisation (OHM, Loehdefink et al.) with a learned static pmf per channel.

Quantiser, for a latent ``y`` of ``M`` features (``(B, M, h, w)``):

* a 1x1 conv maps ``y`` to ``C x S`` values ``z``; the candidates are ``-|z|`` viewed as
  ``S`` candidates for each of the ``C`` channels;
* forward: each channel's symbol is the index of its largest candidate (``argmin |z|``),
  represented as a one-hot vector; in training the gradient flows through
  ``softmax(-|z| * T)`` (straight-through estimator) with a learnable temperature ``T`` per
  channel, started at ``temperature`` (the published value is 100; on the tiny preset
  and the synthetic training set, 600 steps at lambda 10 reach a validation PSNR of
  34.0 dB with 100 and 36.9 dB with 1, at the same rate, so the project's default is 1);
* dequantisation: a 1x1 conv from the ``C x S`` one-hot values back to ``M`` features.

Rate: channel ``c`` codes its symbol with a static pmf ``softmax(logits[c])`` over ``S``
symbols learned with the rest of the network; the likelihood of a symbol is its pmf entry
(in training the straight-through one-hot weights the pmf, so the pmf learns the symbol
statistics and the encoder learns from the soft assignment).

Adaptive rate: only the first ``n`` channels are sent; the others enter dequantisation as
all-zero vectors (likelihood 1, no bits). A channel fraction ``f`` in ``[0, 1]`` picks
``n = n_min + ceil(f (C - n_min))`` (:func:`channels_for_fraction`).

Frozen tables (:meth:`OneHotMax.freeze`): per channel the pmf quantised to integer
frequencies of ``2**precision`` (:func:`hsicomp.entropy.factorized.quantize_pmf`), in the
``FrozenTables`` layout of the factorized model (``lo = 0``, symbols ``0..S-1``, plus an
escape entry of frequency 1 that is never used), so the symbols are range-coded with
:func:`hsicomp.entropy.factorized.encode_latents` and decode exactly on any machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hsicomp.entropy.factorized import FrozenTables, quantize_pmf

__all__ = ["OneHotMax", "channels_for_fraction"]

_ESCAPE_FREQ = 1


def channels_for_fraction(fraction: float, min_channels: int, channels: int) -> int:
    """Channels sent at a channel fraction: ``n_min + ceil(f (C - n_min))``."""
    if not math.isfinite(fraction) or not 0 <= fraction <= 1:
        raise ValueError(f"channel fraction must be in [0, 1], got {fraction}")
    return min_channels + math.ceil(fraction * (channels - min_channels))


class OneHotMax(nn.Module):
    """OHM quantiser, dequantiser and static pmf; see the module docstring."""

    def __init__(self, features: int, channels: int, symbols: int,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if min(features, channels) < 1 or symbols < 2:
            raise ValueError("OHM needs >= 1 feature and channel and >= 2 symbols")
        self.channels = int(channels)
        self.symbols = int(symbols)
        self.to_candidates = nn.Conv2d(features, channels * symbols, 1)
        self.from_one_hot = nn.Conv2d(channels * symbols, features, 1)
        self.temperature = nn.Parameter(torch.full((channels,), float(temperature)))
        self.logits = nn.Parameter(torch.zeros(channels, symbols))
        self.register_buffer("table_freq", torch.zeros(0, 0, dtype=torch.int64))
        self.register_buffer("table_precision", torch.zeros((), dtype=torch.int64))

    def _candidates(self, y: Tensor) -> Tensor:
        b, _, h, w = y.shape
        return -self.to_candidates(y).abs().view(b, self.channels, self.symbols, h, w)

    def symbols_of(self, y: Tensor, channels: int | None = None) -> Tensor:
        """Integer symbols (B, n, h, w) of the first ``channels`` channels of latent ``y``."""
        n = self.channels if channels is None else channels
        return self._candidates(y)[:, :n].argmax(dim=2)

    def dequantize(self, one_hot: Tensor) -> Tensor:
        """Features (B, M, h, w) from one-hot values (B, C, S, h, w)."""
        b, _, _, h, w = one_hot.shape
        return self.from_one_hot(one_hot.reshape(b, self.channels * self.symbols, h, w))

    def one_hot(self, symbols: Tensor) -> Tensor:
        """One-hot values (B, C, S, h, w) of symbols (B, n, h, w); channels >= n are zero."""
        b, n, h, w = symbols.shape
        out = torch.zeros(b, self.channels, self.symbols, h, w, dtype=torch.float32,
                          device=symbols.device)
        out[:, :n].scatter_(2, symbols.unsqueeze(2).long(), 1.0)
        return out

    def forward(self, y: Tensor, channels: int | None = None) -> tuple[Tensor, Tensor]:
        """Dequantised features (B, M, h, w) and symbol likelihoods (B, C, h, w).

        Channels from ``channels`` on are not sent: zero one-hot, likelihood 1.
        """
        n = self.channels if channels is None else channels
        if not 0 <= n <= self.channels:
            raise ValueError(f"channels must be in 0..{self.channels}, got {n}")
        cand = self._candidates(y)
        hard = F.one_hot(cand.argmax(dim=2), self.symbols).permute(0, 1, 4, 2, 3).to(cand.dtype)
        if self.training:
            soft = torch.softmax(cand * self.temperature.view(1, -1, 1, 1, 1), dim=2)
            one_hot = hard + soft - soft.detach()
        else:
            one_hot = hard
        mask = (torch.arange(self.channels, device=y.device) < n).to(cand.dtype)
        one_hot = one_hot * mask.view(1, -1, 1, 1, 1)
        log_pmf = torch.log_softmax(self.logits, dim=1).view(1, self.channels, self.symbols, 1, 1)
        log_lik = (one_hot * log_pmf).sum(dim=2)  # 0 for channels that are not sent
        return self.dequantize(one_hot), torch.exp(log_lik)

    @torch.no_grad()
    def freeze(self, precision: int = 16) -> FrozenTables:
        """Quantise each channel's pmf to integer frequencies, store and return them."""
        pmf = torch.softmax(self.logits.detach().double(), dim=1).numpy()
        total = 1 << precision
        freqs = []
        for k in range(self.channels):
            f = quantize_pmf(pmf[k], precision)
            top = int(np.argmax(f))  # make room for the escape entry
            if f[top] <= _ESCAPE_FREQ:
                raise ValueError(f"precision {precision} too low for {self.symbols} symbols")
            f[top] -= _ESCAPE_FREQ
            freqs.append(np.append(f, _ESCAPE_FREQ))
            assert int(freqs[-1].sum()) == total
        self.table_freq = torch.from_numpy(np.stack(freqs).astype(np.int64))
        self.table_precision = torch.tensor(precision, dtype=torch.int64)
        return self.tables()

    @property
    def frozen(self) -> bool:
        """Whether integer tables have been computed (or loaded)."""
        return tuple(self.table_freq.shape) == (self.channels, self.symbols + 1)

    def tables(self, channels: int | None = None) -> FrozenTables:
        """The stored tables of the first ``channels`` channels (RuntimeError before freeze)."""
        if not self.frozen:
            raise RuntimeError("OHM pmf not frozen: call freeze() first")
        n = self.channels if channels is None else channels
        freq = self.table_freq.numpy()
        return FrozenTables(precision=int(self.table_precision), lo=(0,) * n,
                            freqs=tuple(freq[k].copy() for k in range(n)))

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        key = prefix + "table_freq"
        if key in state_dict:  # frozen tables change the buffer's shape
            self.table_freq = torch.zeros_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
