"""Training of the LineRWKV predictor on the HDF5 splits of a prepared dataset.

Recipe (every value comes from the training settings, see :class:`TrainSettings`): whole
patches, a random window of ``band_window`` contiguous bands per sample, per-image and
per-band normalisation by mean and std over (lines, columns), predictions of lines 1..T-1
de-normalised before the loss, values scaled by ``value_scale``; L1 loss, or the rate-aware
objective (bits of the integer residual under an adaptive discretised Laplace
distribution); ``pos_size`` random columns kept after the line encoder; AdamW with a linear
learning-rate decay, time_decay and time_first at x2 and x3 the learning rate.

Training is resumable: a state file (model, optimiser, step, random generators) is written
atomically every ``checkpoint_every`` steps; a rerun continues from it. It is removed once
the model file is written.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_path, atomic_write_text
from hsicomp.io.manifest import PatchRecord, read_manifest
from hsicomp.progress import progress_bar

#: Columns of the training log; train_loss is the mean over the steps since the last row,
#: the validation columns are empty (nan) on rows without a validation.
LOG_COLUMNS = ["step", "epoch", "lr", "train_loss", "val_l1", "val_bits", "samples_per_s",
               "elapsed_s"]


def settings_fingerprint(settings: Any, ignored: tuple[str, ...]) -> str:
    """Hash of a settings dataclass without the fields that do not change the result."""
    d = dataclasses.asdict(settings)
    for key in ignored:
        d.pop(key)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class TrainSettings:
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
    def from_dict(cls, values: dict) -> TrainSettings:
        """Settings from a mapping; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise HsicompError(f"unknown training settings: {', '.join(unknown)}")
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


class PatchStore:
    """Training or validation patches of one HDF5 split, read on demand."""

    def __init__(self, dataset_dir: Path, split: str) -> None:
        records = [r for r in read_manifest(dataset_dir / "manifest.csv") if r.split == split]
        self.records: list[PatchRecord] = records
        self.path = dataset_dir / f"{split}.h5"
        self._file = None

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int, band_start: int = 0, band_stop: int | None = None) -> np.ndarray:
        """Bands ``band_start:band_stop`` of patch ``index`` as float32 (bands, rows, cols)."""
        import h5py

        if self._file is None:
            if not self.path.is_file():
                raise HsicompError(f"{self.path}: training split not found")
            self._file = h5py.File(self.path, "r")
        rec = self.records[index]
        return self._file[f"patches/{rec.patch_id}"][band_start:band_stop].astype(np.float32)


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


def select_device(name: str):
    """The torch device for ``name`` ('auto' picks CUDA when present)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HsicompError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


class ResumableTraining:
    """Learning-rate schedule, resumable state, progress, checkpoints and the CSV log shared
    by the trainers.

    Needs ``settings`` (with ``lr_start``, ``lr_end``, ``val_patches``, ``checkpoint_every``
    and ``fingerprint()``), ``total_steps``, ``step``, ``model``, ``optimizer``, ``rng``,
    ``log_rows``, ``state_path``, ``log_path``, ``val``, ``progress``, ``device`` and a
    ``write_outputs()`` method.
    """

    def lr_at(self, step: int) -> float:
        """Linear from lr_start (step 0) to lr_end (last step)."""
        s = self.settings
        frac = step / max(1, self.total_steps - 1)
        return s.lr_start + (s.lr_end - s.lr_start) * min(1.0, frac)

    # -- state -------------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write the resumable state atomically."""
        import torch

        state = {"fingerprint": self.settings.fingerprint(), "step": self.step,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "torch_rng": torch.get_rng_state(),
                 "numpy_rng": json.dumps(self.rng.bit_generator.state),
                 "log": json.dumps(self.log_rows)}
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def try_resume(self) -> bool:
        """Continue from a state file written by the same settings; True when resumed."""
        import torch

        if not self.state_path.is_file():
            return False
        try:
            state = torch.load(self.state_path, map_location=self.device, weights_only=True)
        except Exception as exc:  # a damaged state file: start again, keep a note
            print(f"{self.state_path}: unreadable training state ({exc}); starting again")
            return False
        if state.get("fingerprint") != self.settings.fingerprint():
            print(f"{self.state_path}: settings changed; starting again")
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.log_rows = json.loads(state["log"])
        self.step = int(state["step"])
        return True

    # -- loop helpers ------------------------------------------------------------------------
    def validation_count(self) -> int:
        """Validation patches to use: ``val_patches`` of them, at most all."""
        n = self.settings.val_patches
        return len(self.val) if n is None else min(len(self.val), n)

    def progress_bar(self, desc: str) -> Any:
        """A bar over the training steps (sparse updates when not on a terminal)."""
        return progress_bar(total=self.total_steps, initial=self.step, desc=desc, unit="step",
                            enabled=self.progress)

    def checkpoint(self, done: bool, steps_run: int, stop_after: int | None) -> bool:
        """Save the state every ``checkpoint_every`` steps and at the end; True (state
        saved) when this run has done its ``stop_after`` steps before the end."""
        pause = stop_after is not None and steps_run >= stop_after and not done
        if done or pause or self.step % self.settings.checkpoint_every == 0:
            self.save_state()
        return pause

    def finish(self) -> None:
        """Write the outputs and drop the state file (nothing left to resume)."""
        self.write_outputs()
        self.state_path.unlink(missing_ok=True)

    def write_log(self, columns: list[str]) -> None:
        """Write ``log_rows`` as CSV (floats with 6 significant digits), atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in self.log_rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
        atomic_write_text(self.log_path, buf.getvalue())


class Trainer(ResumableTraining):
    """One training run of one model size; see the module docstring."""

    def __init__(self, dataset_dir: Path, out: Path, settings: TrainSettings,
                 progress: bool = True) -> None:
        import torch

        from hsicomp.models import SIZES, LineRWKV

        if settings.size.upper() not in SIZES:
            raise HsicompError(f"unknown size {settings.size!r} (known: {', '.join(SIZES)})")
        self.settings = settings
        self.out = out
        self.state_path = out.with_name(out.name + ".state")
        self.log_path = out.with_suffix(".log.csv")
        self.progress = progress
        torch.set_num_threads(settings.threads)
        self.device = select_device(settings.device)
        self.train = PatchStore(dataset_dir, "train")
        self.val = PatchStore(dataset_dir, "val")
        if len(self.train) == 0:
            raise HsicompError(f"{dataset_dir}: no training patches")
        bands = {r.bands for r in self.train.records}
        if min(bands) < settings.band_window:
            raise HsicompError(f"{dataset_dir}: patches have {min(bands)} bands, fewer than "
                               f"band_window={settings.band_window}")
        torch.manual_seed(settings.seed)
        self.model = LineRWKV(SIZES[settings.size.upper()]).to(self.device)
        self.model.recompute_blocks = settings.recompute_blocks
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=settings.lr_start,
                                           betas=settings.betas, eps=settings.eps)
        self.rng = np.random.default_rng(settings.seed)
        per_epoch = settings.samples_per_epoch or len(self.train)
        self.steps_per_epoch = max(1, math.ceil(per_epoch / settings.batch))
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.step = 0
        self.log_rows: list[dict] = []

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

    # -- data --------------------------------------------------------------------------------
    def sample_batch(self):
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

    def loss(self, x, columns):
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

    # -- loop --------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> None:
        """Train to the end (or for ``stop_after`` more steps); write the model and logs."""
        s = self.settings
        resumed = self.try_resume()
        if resumed:
            print(f"resuming {self.out.name} at step {self.step}/{self.total_steps}")
        validate_every = s.validate_every or self.steps_per_epoch
        bar = self.progress_bar(f"train {s.size}")
        t0, samples, loss_sum, loss_count = time.perf_counter(), 0, 0.0, 0
        elapsed_before = self.log_rows[-1]["elapsed_s"] if self.log_rows else 0.0
        steps_run = 0
        while self.step < self.total_steps:
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_factor"]
            x, columns = self.sample_batch()
            loss = self.loss(x, columns)
            value = loss.item()
            if not math.isfinite(value):
                raise HsicompError(f"training of {s.size} diverged at step {self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            steps_run += 1
            samples += x.shape[0]
            loss_sum, loss_count = loss_sum + value, loss_count + 1
            rate = samples / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4g}", samples_s=f"{rate:.1f}")
            done = self.step == self.total_steps
            validate = done or self.step % validate_every == 0
            if validate or self.step % s.log_every == 0:
                val_l1, val_bits = self.validate() if validate else (float("nan"),) * 2
                self.log_rows.append({
                    "step": self.step, "epoch": self.step / self.steps_per_epoch, "lr": lr,
                    "train_loss": loss_sum / loss_count, "val_l1": val_l1,
                    "val_bits": val_bits, "samples_per_s": rate,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0})
                loss_sum, loss_count = 0.0, 0
            if self.checkpoint(done, steps_run, stop_after):
                bar.close()
                return
        bar.close()
        self.finish()

    def write_outputs(self) -> None:
        """The model file, the CSV log and the loss-curve figure."""
        from hsicomp.models.checkpoint import save_model

        save_model(self.out, self.model, self.settings.size,
                   metadata={"settings": dataclasses.asdict(self.settings), "steps": self.step})
        self.write_log(LOG_COLUMNS)
        from hsicomp.figures.loss_curve import plot_training_log

        plot_training_log(self.log_path, self.out.with_suffix(".loss.png"), self.settings.size)
