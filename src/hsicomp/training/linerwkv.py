"""Training of the LineRWKV predictor on the HDF5 splits of a prepared dataset.

Recipe (every value comes from the training settings, see :class:`LineRWKVTrainSettings`):
whole patches, a random window of ``band_window`` contiguous bands per sample, per-image and
per-band normalisation by mean and std over (lines, columns), predictions of lines 1..T-1
de-normalised before the loss, values scaled by ``value_scale``; L1 loss, or the rate-aware
objective (bits of the integer residual under an adaptive discretised Laplace
distribution); ``pos_size`` random columns kept after the line encoder; AdamW with a linear
learning-rate decay, time_decay and time_first at x2 and x3 the learning rate.

Training is resumable (:mod:`hsicomp.training.loop`): a state file (model, optimiser, step,
random generators) is written atomically every ``checkpoint_every`` steps; a rerun
continues from it. It is removed once the model file is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.training.loop import ResumableTraining, check_setting_names, settings_fingerprint


@dataclass
class LineRWKVTrainSettings:
    """Every hyper-parameter of a training run."""

    size: str = "XS"
    epochs: int = 10
    samples_per_epoch: int | None = None  # default: the number of training patches
    batch: int = 3
    band_window: int = 16
    pos_size: int | None = 128
    lr_start: float = 5e-4
    lr_end: float = 1e-6
    time_decay_lr_factor: float = 2.0
    time_first_lr_factor: float = 3.0
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-8
    weight_decay: float = 0.0
    value_scale: float = 1e-3
    objective: str = "l1"  # "l1" or "rate"
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    threads: int = 1
    checkpoint_every: int = 200
    validate_every: int | None = None  # steps; default: once per epoch
    log_every: int = 10  # steps between rows of the training log (mean training loss)
    val_patches: int | None = None  # cap on validation patches
    val_column_chunk: int = 32
    recompute_blocks: bool = False  # activation checkpointing: less memory, about 1.3x time
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict) -> LineRWKVTrainSettings:
        """Settings from a mapping; unknown keys are an error."""
        check_setting_names(cls, values, "training settings")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        settings = cls(**values)
        if settings.objective not in ("l1", "rate"):
            raise HsicompError(f"objective must be 'l1' or 'rate', got {settings.objective!r}")
        return settings

    def fingerprint(self) -> str:
        """Hash of the settings that change the result (not the thread count or device)."""
        return settings_fingerprint(self, ("threads", "device", "checkpoint_every"))


def normalise(x, eps: float = 1e-3):
    """Per image and band: (x - mean) / std over (lines, columns); returns (xn, mean, std)."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True).clamp_min(eps)
    return (x - mean) / std, mean, std


def laplace_bits(residual, scale):
    """Bits of integer residuals under a discretised Laplace(0, scale) distribution."""
    import torch

    upper = _laplace_cdf(residual + 0.5, scale)
    lower = _laplace_cdf(residual - 0.5, scale)
    return -torch.log2((upper - lower).clamp_min(1e-9))


def _laplace_cdf(x, scale):
    import torch

    return 0.5 + 0.5 * torch.sign(x) * (1.0 - torch.exp(-x.abs() / scale))


def rate_loss(pred, target):
    """Mean bits per sample of the rounded residual, with an adaptive per-band scale.

    The scale of line t of a band is the mean absolute residual of line t-1 of that band
    (detached, as a coder adapting to past residuals would estimate it); rounding is
    replaced by additive uniform noise so the objective has gradients.
    """
    import torch

    residual = target - pred
    noisy = residual + torch.empty_like(residual).uniform_(-0.5, 0.5)
    scale = residual.detach().abs().mean(dim=-1, keepdim=True)  # per (image, band, line)
    first = scale[..., :1, :]
    scale = torch.cat([first, scale[..., :-1, :]], dim=-2).clamp_min(0.3)
    return laplace_bits(noisy, scale).mean()


class LineRWKVTrainer(ResumableTraining):
    """One training run of one model size; see the module docstring."""

    #: Log columns (:func:`hsicomp.training.loop.log_columns`): train_loss is the mean over
    #: the steps since the last row; val_l1 and val_bits are nan on rows without validation.
    val_columns = ("val_l1", "val_bits")

    def __init__(self, dataset_dir: Path, out: Path, settings: LineRWKVTrainSettings,
                 progress: bool = True) -> None:
        import torch

        from hsicomp.models import SIZES, LineRWKV

        if settings.size.upper() not in SIZES:
            raise HsicompError(f"unknown size {settings.size!r} (known: {', '.join(SIZES)})")
        super().__init__(dataset_dir, out, settings, progress)
        bands = {r.bands for r in self.train.records}
        if min(bands) < settings.band_window:
            raise HsicompError(f"{dataset_dir}: patches have {min(bands)} bands, fewer than "
                               f"band_window={settings.band_window}")
        self.model = LineRWKV(SIZES[settings.size.upper()]).to(self.device)
        self.model.recompute_blocks = settings.recompute_blocks
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=settings.lr_start,
                                           betas=settings.betas, eps=settings.eps)

    def _param_groups(self) -> list[dict]:
        s = self.settings
        groups: dict[str, list] = {"decay": [], "first": [], "rest": []}
        for name, p in self.model.named_parameters():
            key = ("decay" if name.endswith("time_decay") else
                   "first" if name.endswith("time_first") else "rest")
            groups[key].append(p)
        factors = {"decay": s.time_decay_lr_factor, "first": s.time_first_lr_factor, "rest": 1.0}
        return [{"params": ps, "lr_factor": factors[k], "weight_decay": s.weight_decay}
                for k, ps in groups.items() if ps]

    def describe(self) -> str:
        """The model size."""
        return self.settings.size

    def validation_interval(self) -> int:
        """``validate_every``, by default once per epoch."""
        return self.settings.validate_every or self.steps_per_epoch

    # -- data --------------------------------------------------------------------------------
    def sample_batch(self) -> tuple[Any, Any]:
        """A batch of random band windows of random training patches, all of one shape."""
        import torch

        s = self.settings
        first = int(self.rng.integers(len(self.train)))
        shape = self.train.records[first].shape
        same = [i for i, r in enumerate(self.train.records) if r.shape == shape]
        picks = [first] + [same[int(j)] for j in self.rng.integers(len(same), size=s.batch - 1)]
        cubes = []
        for idx in picks:
            start = int(self.rng.integers(shape[0] - s.band_window + 1))
            cubes.append(self.train.read(idx, start, start + s.band_window))
        x = torch.from_numpy(np.stack(cubes)).to(self.device)
        columns = None
        if s.pos_size is not None and s.pos_size < shape[2]:
            cols = np.stack([self.rng.choice(shape[2], s.pos_size, replace=False)
                             for _ in picks])
            columns = torch.from_numpy(np.sort(cols, axis=1)).to(self.device)
        return x, columns

    def loss(self, x: Any, columns: Any) -> Any:
        """Training loss of a batch (B, I, T, C) of raw values."""
        s = self.settings
        xn, mean, std = normalise(x)
        pred = self.model(xn, columns=columns) * std + mean  # (B, I, T-1, C or P)
        target = x[:, :, 1:]
        if columns is not None:
            idx = columns[:, None, None, :].expand(-1, x.shape[1], x.shape[2] - 1, -1)
            target = target.gather(3, idx)
        if s.objective == "rate":
            return rate_loss(pred, target)
        return (pred - target).abs().mean() * s.value_scale

    def losses(self, batch: tuple[Any, Any]) -> tuple[Any, tuple[float]]:
        """The loss of a batch and its value."""
        loss = self.loss(*batch)
        return loss, (loss.item(),)

    def validate(self) -> tuple[float, float]:
        """(L1 in value_scale units, bits/sample of the rounded residual) on all bands."""
        import torch

        s = self.settings
        n = self.validation_count()
        if n == 0:
            return float("nan"), float("nan")
        self.model.eval()
        l1 = bits = count = 0.0
        with torch.no_grad():
            for i in range(n):
                x = torch.from_numpy(self.val.read(i)).to(self.device)[None]
                xn, mean, std = normalise(x)
                pred = self.model(xn, column_chunk=s.val_column_chunk) * std + mean
                residual = x[:, :, 1:] - torch.round(pred)
                scale = residual.abs().mean(dim=-1, keepdim=True).clamp_min(0.3)
                l1 += float((x[:, :, 1:] - pred).abs().sum()) * s.value_scale
                bits += float(laplace_bits(residual, scale).sum())
                count += residual.numel()
        self.model.train()
        return l1 / count, bits / count

    def write_outputs(self) -> None:
        """The model file, the CSV log and the loss-curve figure."""
        from hsicomp.figures.loss_curve import plot_training_log
        from hsicomp.models.checkpoint import save_model

        save_model(self.out, self.model, self.settings.size,
                   metadata={"settings": dataclasses.asdict(self.settings), "steps": self.step})
        self.write_log()
        plot_training_log(self.log_path, self.out.with_suffix(".loss.png"), self.settings.size)
