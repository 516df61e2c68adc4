"""The resumable training loop shared by the trainers.

:class:`ResumableTraining` runs the steps (learning rate, batch, loss, backward pass,
optimiser step), writes the rows of the CSV log, validates, checkpoints and writes the
outputs at the end. A trainer builds its model and optimiser and defines the hooks
:meth:`~ResumableTraining.describe`, :meth:`~ResumableTraining.sample_batch`,
:meth:`~ResumableTraining.losses`, :meth:`~ResumableTraining.validate` and
:meth:`~ResumableTraining.write_outputs` (optionally
:meth:`~ResumableTraining.clip_gradients` and
:meth:`~ResumableTraining.validation_interval`), and the log columns ``train_columns``
and ``val_columns``.

Training is resumable: a state file (model, optimiser, step, random generators, log rows)
is written atomically every ``checkpoint_every`` steps and when a run stops early; a rerun
with the same settings continues from it. It is removed once the outputs are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_path
from hsicomp.io.manifest import PatchRecord, read_manifest
from hsicomp.io.table import write_table
from hsicomp.progress import progress_bar


def log_columns(train: tuple[str, ...], val: tuple[str, ...]) -> list[str]:
    """Columns of a training log: step, epoch, lr, the training means, the validation
    values, samples_per_s and elapsed_s."""
    return ["step", "epoch", "lr", *train, *val, "samples_per_s", "elapsed_s"]


def settings_fingerprint(settings: Any, ignored: tuple[str, ...]) -> str:
    """Hash of a settings dataclass without the fields that do not change the result."""
    d = dataclasses.asdict(settings)
    for key in ignored:
        d.pop(key)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def check_setting_names(cls: type, values: dict, what: str) -> None:
    """HsicompError naming the keys of ``values`` that are no field of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise HsicompError(f"unknown {what}: {', '.join(unknown)}")


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


def select_device(name: str) -> Any:
    """The torch device for ``name`` ('auto' picks CUDA when present)."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HsicompError("device 'cuda' requested but no CUDA device is available")
    return torch.device(name)


class ResumableTraining:
    """One training run: the loop, learning-rate schedule, resumable state, progress,
    checkpoints and the CSV log; see the module docstring for the hooks.

    ``settings`` needs ``seed``, ``device``, ``threads``, ``batch``, ``epochs``,
    ``samples_per_epoch``, ``lr_start``, ``lr_end``, ``checkpoint_every``, ``log_every``,
    ``val_patches`` and ``fingerprint()``. A subclass sets ``model`` and ``optimizer``
    after calling ``__init__`` (which seeds torch's generator just before).
    """

    #: Log columns of the training means (the first one is the loss) and of validation.
    train_columns: ClassVar[tuple[str, ...]] = ("train_loss",)
    val_columns: ClassVar[tuple[str, ...]] = ()

    model: Any
    optimizer: Any

    def __init__(self, dataset_dir: Path, out: Path, settings: Any, progress: bool) -> None:
        import torch

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
        per_epoch = settings.samples_per_epoch or len(self.train)
        self.steps_per_epoch = max(1, math.ceil(per_epoch / settings.batch))
        self.total_steps = self.steps_per_epoch * settings.epochs
        self.step = 0
        self.log_rows: list[dict] = []
        self.rng = np.random.default_rng(settings.seed)
        torch.manual_seed(settings.seed)

    # -- hooks -------------------------------------------------------------------------------
    def describe(self) -> str:
        """What is trained, for the progress bar and messages."""
        raise NotImplementedError

    def sample_batch(self) -> Any:
        """The next training batch (drawn from ``rng``)."""
        raise NotImplementedError

    def losses(self, batch: Any) -> tuple[Any, tuple[float, ...]]:
        """The loss tensor of a batch and the values of ``train_columns`` (loss first)."""
        raise NotImplementedError

    def clip_gradients(self) -> None:
        """Change the gradients before the optimiser step (nothing by default)."""

    def validation_interval(self) -> int | None:
        """Steps between validations (None: at the end only)."""
        return self.settings.validate_every

    def validate(self) -> tuple[float, ...]:
        """The values of ``val_columns`` on the validation patches."""
        raise NotImplementedError

    def write_outputs(self) -> None:
        """The model file, the CSV log and any other output."""
        raise NotImplementedError

    # -- schedule ----------------------------------------------------------------------------
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

    # -- loop --------------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> None:
        """Train to the end (or for ``stop_after`` more steps); write the outputs."""
        if self.try_resume():
            print(f"resuming {self.out.name} at step {self.step}/{self.total_steps}")
        every = self.validation_interval()
        bar = self.progress_bar(f"train {self.describe()}")
        t0, samples, steps_run = time.perf_counter(), 0, 0
        sums, count = [0.0] * len(self.train_columns), 0
        elapsed_before = self.log_rows[-1]["elapsed_s"] if self.log_rows else 0.0
        self.model.train()
        while self.step < self.total_steps:
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_factor", 1.0)
            loss, values = self.losses(self.sample_batch())
            if not math.isfinite(values[0]):
                raise HsicompError(f"training of {self.describe()} diverged at step "
                                   f"{self.step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.clip_gradients()
            self.optimizer.step()
            self.step += 1
            steps_run += 1
            samples += self.settings.batch
            sums, count = [a + b for a, b in zip(sums, values, strict=True)], count + 1
            rate = samples / max(time.perf_counter() - t0, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{values[0]:.4g}", samples_s=f"{rate:.1f}")
            done = self.step == self.total_steps
            validate = done or (every is not None and self.step % every == 0)
            if validate or self.step % self.settings.log_every == 0:
                val = self.validate() if validate else (float("nan"),) * len(self.val_columns)
                self.log_rows.append({
                    "step": self.step, "epoch": self.step / self.steps_per_epoch, "lr": lr,
                    **{k: v / count for k, v in zip(self.train_columns, sums, strict=True)},
                    **dict(zip(self.val_columns, val, strict=True)), "samples_per_s": rate,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0})
                sums, count = [0.0] * len(self.train_columns), 0
            if self.checkpoint(done, steps_run, stop_after):
                bar.close()
                return
        bar.close()
        self.finish()

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

    def write_log(self) -> None:
        """Write ``log_rows`` as CSV (floats with 6 significant digits), atomically."""
        write_table(self.log_path, self.log_rows,
                    log_columns(self.train_columns, self.val_columns),
                    lambda v: f"{v:.6g}" if isinstance(v, float) else v)
