"""Training of the GDN transform codec (``hsicomp train-gdn``): one model per lambda.

Recipe (every value a setting, see :class:`GdnTrainSettings`): the network of preset
``preset`` (:data:`hsicomp.models.gdn.PRESETS`) with the band count of the data; per-band
normalisation by the mean and standard deviation of the training split (first
``norm_patches`` patches), stored in the model; batches of ``batch`` random ``crop`` x
``crop`` crops (all bands) of random training patches; additive uniform noise in place of
rounding; loss ``bits per sample + lmbda * MSE`` on normalised values; Adam with a linear
learning rate from ``lr_start`` to ``lr_end`` and gradient-norm clipping. At the end the
entropy model is frozen into integer tables and the model file is written atomically.

Gain units (codec ``gdn-gain``): with ``lambdas`` (one per level) the model gets gain units
(:mod:`hsicomp.models.gain`) with ``len(lambdas)`` levels; each step draws a level ``s``
uniformly (from the seeded generator) and uses loss ``bits per sample + lambdas[s] * MSE``
at level ``s`` (``lmbda`` is then unused). The one entropy model is trained on the gained
latents of all levels and frozen into one set of tables (values beyond the tables' support
are escape-coded). Validation of a gain model runs at level 0.

One-Hot-Max quantisation (codec ``gdn-ohm``): ``ohm_symbols`` (> 0) candidates per channel,
``ohm_channels`` channels (0: the preset's latent channels). Fixed rate: loss as for gdn
with ``lmbda``, all channels. Adaptive rate (``ohm_min_channels`` set, ``lambdas`` = [lambda
at the fewest channels, lambda at all channels]): each step draws ``f = sqrt(u)``, ``u``
uniform in [0, 1), sends the first ``n_min + ceil(f (C - n_min))`` channels and uses
``lambdas[0] ** (1 - f) * lambdas[1] ** f``. Validation runs with all channels.

Deterministic for a seed on a given machine and thread count. Resumable
(:mod:`hsicomp.training.loop`): every ``checkpoint_every`` steps the state goes to
``<model>.state``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.training.loop import ResumableTraining, check_setting_names, settings_fingerprint

if TYPE_CHECKING:
    from hsicomp.models.gdn import TransformCodecConfig

@dataclass
class GdnTrainSettings:
    """Every hyper-parameter of one GDN training run."""

    preset: str = "tiny"
    lmbda: float = 1.0
    lambdas: list[float] | None = None  # gain units: one lambda per level (gdn-gain);
    # adaptive OHM: lambdas at the fewest and at all channels
    ohm_symbols: int = 0  # One-Hot-Max candidates per channel (gdn-ohm); 0: rounding
    ohm_channels: int = 0  # One-Hot-Max channels; 0: the preset's latent channels
    ohm_min_channels: int | None = None  # adaptive-rate OHM: fewest channels sent
    epochs: int = 10
    samples_per_epoch: int | None = None  # default: the number of training patches
    batch: int = 4
    crop: int | None = 64  # None: whole patches
    lr_start: float = 1e-3
    lr_end: float = 1e-4
    clip_grad: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    threads: int = 1
    checkpoint_every: int = 200
    validate_every: int | None = None  # steps; default: at the end only
    log_every: int = 10
    val_patches: int | None = None
    norm_patches: int | None = 64
    cache_patches: int = 64  # training patches kept decoded in memory
    precision: int = 16  # bits of the frozen entropy tables

    @classmethod
    def from_dict(cls, values: dict) -> GdnTrainSettings:
        """Settings from a mapping; unknown keys and unknown presets are an error."""
        from hsicomp.models.gdn import PRESETS

        check_setting_names(cls, values, "gdn training settings")
        settings = cls(**values)
        if settings.preset not in PRESETS:
            raise HsicompError(f"unknown gdn preset {settings.preset!r} "
                               f"(known: {', '.join(PRESETS)})")
        if not settings.lmbda > 0:
            raise HsicompError(f"lmbda must be positive, got {settings.lmbda}")
        if settings.lambdas is not None:
            lambdas = settings.lambdas
            if not isinstance(lambdas, list) or not lambdas or \
                    not all(isinstance(v, (int, float)) and v > 0 for v in lambdas):
                raise HsicompError(f"lambdas must be a non-empty list of positive numbers, "
                                   f"got {lambdas!r}")
            settings.lambdas = [float(v) for v in lambdas]
        if settings.ohm_symbols:
            adaptive = settings.ohm_min_channels is not None
            if adaptive != (settings.lambdas is not None) or \
                    (adaptive and len(settings.lambdas or []) != 2):
                raise HsicompError("OHM training takes lambdas (two values) exactly when "
                                   "ohm_min_channels is set (adaptive rate)")
            try:
                settings.model_config(PRESETS[settings.preset], 1)
            except ValueError as exc:
                raise HsicompError(f"bad OHM settings: {exc}") from None
        elif settings.ohm_min_channels is not None or settings.ohm_channels:
            raise HsicompError("ohm_channels and ohm_min_channels need ohm_symbols")
        return settings

    def model_config(self, preset: TransformCodecConfig, bands: int) -> TransformCodecConfig:
        """The network configuration: ``preset`` with the data's bands, gain units or OHM."""
        config = preset.with_bands(bands).with_levels(self.levels)
        if self.ohm_symbols:
            config = config.with_ohm(self.ohm_symbols, self.ohm_channels, self.ohm_min_channels)
        return config

    @property
    def levels(self) -> int:
        """Gain-unit levels (0: a plain gdn or an OHM model)."""
        return len(self.lambdas) if self.lambdas and not self.ohm_symbols else 0

    def describe(self) -> str:
        """``lambda 1`` or ``lambdas 0.1, 1, 10`` (for messages)."""
        if self.ohm_symbols:
            return f"OHM {self.ohm_symbols} symbols, " + (
                f"lambda {self.lmbda:g}" if self.lambdas is None else
                f"lambdas {self.lambdas[0]:g}..{self.lambdas[1]:g} over channels "
                f"{self.ohm_min_channels}..")
        if self.lambdas:
            return "lambdas " + ", ".join(f"{v:g}" for v in self.lambdas)
        return f"lambda {self.lmbda:g}"

    def fingerprint(self) -> str:
        """Hash of the settings that change the result (not threads, device, checkpoints)."""
        return settings_fingerprint(self, ("threads", "device", "checkpoint_every",
                                           "cache_patches"))


class GdnTrainer(ResumableTraining):
    """One training run of one lambda; see the module docstring."""

    #: Log columns (:func:`hsicomp.training.loop.log_columns`; validation columns are nan
    #: on rows without validation): bits per sample, MSE in normalised units, validation
    #: PSNR in dB of the de-normalised, rounded reconstruction (peak 2**bit_depth - 1).
    train_columns = ("train_loss", "train_bps", "train_mse")
    val_columns = ("val_bps", "val_psnr")

    def __init__(self, dataset_dir: Path, out: Path, settings: GdnTrainSettings,
                 progress: bool = True) -> None:
        import torch

        from hsicomp.models.gdn import PRESETS, TransformCodec

        super().__init__(dataset_dir, out, settings, progress)
        bands = {r.bands for r in self.train.records}
        if len(bands) != 1:
            raise HsicompError(f"{dataset_dir}: training patches have different band counts "
                               f"{sorted(bands)}")
        config = settings.model_config(PRESETS[settings.preset], bands.pop())
        self.model = TransformCodec(config)
        self.model.set_normalization(*self.band_statistics())
        self.model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr_start)
        self.read_patch = lru_cache(maxsize=settings.cache_patches)(self.train.read)

    def describe(self) -> str:
        """``gdn`` and the lambda(s)."""
        return f"gdn {self.settings.describe()}"

    def band_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band mean and standard deviation over the first ``norm_patches`` patches."""
        from hsicomp.models.gdn import band_statistics

        n = len(self.train) if self.settings.norm_patches is None \
            else min(len(self.train), self.settings.norm_patches)
        weights, means, squares = [], [], []
        for i in range(n):
            rec = self.train.records[i]
            mean, std = band_statistics(self.train.read(i))
            weights.append(rec.rows * rec.cols)
            means.append(mean.astype(np.float64))
            squares.append(std.astype(np.float64) ** 2 + mean.astype(np.float64) ** 2)
        w = np.asarray(weights, dtype=np.float64)[:, None] / sum(weights)
        mean = (w * np.stack(means)).sum(axis=0)
        var = (w * np.stack(squares)).sum(axis=0) - mean**2
        return mean.astype(np.float32), np.maximum(np.sqrt(np.maximum(var, 0)), 1e-3
                                                   ).astype(np.float32)

    # -- data and loss -----------------------------------------------------------------------
    def sample_batch(self):
        """Normalised random crops (batch, bands, crop, crop) of random training patches."""
        import torch

        s = self.settings
        picks = [int(i) for i in self.rng.integers(len(self.train), size=s.batch)]
        recs = [self.train.records[i] for i in picks]
        h = min(r.rows for r in recs) if s.crop is None else min(s.crop, *(r.rows for r in recs))
        w = min(r.cols for r in recs) if s.crop is None else min(s.crop, *(r.cols for r in recs))
        crops = []
        for idx, rec in zip(picks, recs, strict=True):
            top = int(self.rng.integers(rec.rows - h + 1))
            left = int(self.rng.integers(rec.cols - w + 1))
            crops.append(self.read_patch(idx)[:, top:top + h, left:left + w])
        x = torch.from_numpy(np.stack(crops)).to(self.device)
        return self.model.normalize(x)

    def losses(self, x: Any) -> tuple[Any, tuple[float, float, float]]:
        """Rate-distortion loss of a batch at a random level (gain units) or channel count
        (adaptive OHM); the values of loss, bits per sample and MSE."""
        from hsicomp.models.gdn import rate_distortion_loss
        from hsicomp.models.ohm import channels_for_fraction

        s = self.settings
        if s.ohm_symbols and s.lambdas:
            f = math.sqrt(float(self.rng.random()))
            n = channels_for_fraction(f, self.model.config.ohm_fewest_channels,
                                      self.model.config.ohm_channel_count)
            out = self.model(x, channels=n)
            lmbda = s.lambdas[0] ** (1 - f) * s.lambdas[1] ** f
        elif s.lambdas:
            level = int(self.rng.integers(s.levels))
            out, lmbda = self.model(x, float(level)), s.lambdas[level]
        else:
            out, lmbda = self.model(x), s.lmbda
        loss, bps, mse = rate_distortion_loss(x, out, lmbda)
        return loss, (loss.item(), bps.item(), mse.item())

    def clip_gradients(self) -> None:
        """Clip the gradient norm to ``clip_grad``."""
        import torch

        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.clip_grad)

    def validate(self) -> tuple[float, float]:
        """(estimated bits per sample, PSNR in dB of the rounded reconstruction) on val."""
        import torch

        from hsicomp.entropy.factorized import FactorizedEntropyModel
        from hsicomp.evaluation.metrics import psnr_db

        s = self.settings
        n = self.validation_count()
        if n == 0:
            return float("nan"), float("nan")
        self.model.eval()
        bits = sq = count = 0.0
        peak = 1.0
        with torch.no_grad():
            for i in range(n):
                rec = self.val.records[i]
                x = torch.from_numpy(self.val.read(i)).to(self.device)[None]
                out = self.model(self.model.normalize(x), 0.0 if s.levels else None)
                bits += float(FactorizedEntropyModel.bits(out.likelihoods))
                peak = float((1 << rec.bit_depth) - 1)
                x_hat = self.model.denormalize(out.x_hat).round().clamp(0, peak)
                sq += float(((x_hat - x) ** 2).sum())
                count += x.numel()
        self.model.train()
        return bits / count, psnr_db(sq / count, peak)

    def write_outputs(self) -> None:
        """Freeze the entropy tables; write the model file and the CSV log."""
        from hsicomp.models.checkpoint import save_gdn_model

        self.model.cpu().eval()
        self.model.entropy.freeze(precision=self.settings.precision)
        save_gdn_model(self.out, self.model,
                       metadata={"settings": dataclasses.asdict(self.settings),
                                 **({"lambdas": self.settings.lambdas} if self.settings.lambdas
                                    else {"lambda": self.settings.lmbda}),
                                 "preset": self.settings.preset,
                                 "steps": self.step})
        self.write_log()
