"""Training commands: ``train`` (LineRWKV), ``train-gdn`` and ``train-basis``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hsicomp.cli.options import json_object
from hsicomp.training.gdn import GdnTrainer, GdnTrainSettings
from hsicomp.training.linerwkv import LineRWKVTrainer, LineRWKVTrainSettings


def settings_values(text: str, threads: int) -> dict:
    """The ``--settings`` JSON object of a training command, with ``--threads`` applied."""
    values = json_object(text, "--settings")
    if threads:
        values["threads"] = threads
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    settings = LineRWKVTrainSettings.from_dict(settings_values(args.settings, args.threads))
    trainer = LineRWKVTrainer(Path(args.data), Path(args.out), settings,
                              progress=not args.no_progress)
    trainer.run(stop_after=args.stop_after)
    if trainer.step == trainer.total_steps:
        print(f"{args.out}: {settings.size} trained for {trainer.step} steps")
    return 0


def _register_linerwkv(sub: argparse._SubParsersAction) -> None:
    """Add ``hsicomp train``."""
    p = sub.add_parser("train", help="train a LineRWKV predictor on a prepared dataset")
    p.add_argument("--data", required=True, help="prepared dataset folder (with train.h5)")
    p.add_argument("--out", required=True, help="output model file (.pt)")
    p.add_argument("--settings", default="{}", help="training settings as a JSON object")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = from settings)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (resumably) after this many steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train_gdn(args: argparse.Namespace) -> int:
    settings = GdnTrainSettings.from_dict(settings_values(args.settings, args.threads))
    trainer = GdnTrainer(Path(args.data), Path(args.out), settings, progress=not args.no_progress)
    trainer.run(stop_after=args.stop_after)
    if trainer.step == trainer.total_steps:
        print(f"{args.out}: gdn {settings.preset} {settings.describe()} trained for "
              f"{trainer.step} steps")
    return 0


def _register_gdn(sub: argparse._SubParsersAction) -> None:
    """Add ``hsicomp train-gdn``."""
    p = sub.add_parser("train-gdn", help="train a GDN transform codec (one lambda, or gain "
                       "units with lambdas) on a "
                       "prepared dataset")
    p.add_argument("--data", required=True, help="prepared dataset folder (with train.h5)")
    p.add_argument("--out", required=True, help="output model file (.pt)")
    p.add_argument("--settings", default="{}",
                   help="training settings as a JSON object (preset, lmbda or lambdas, "
                   "epochs, ...)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = from settings)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop (resumably) after this many steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_gdn)


def _cmd_train_basis(args: argparse.Namespace) -> int:
    from hsicomp.training.spectral import train_basis

    model = train_basis(Path(args.data))
    model.save(args.out)
    print(f"{args.out}: spectral basis of {model.bands} bands, sha256 {model.digest.hex()}")
    return 0


def _register_basis(sub: argparse._SubParsersAction) -> None:
    """Add ``hsicomp train-basis``."""
    p = sub.add_parser("train-basis", help="compute the spectral basis (KLT) of a prepared "
                       "dataset's training split, for klt and coolchic (basis_model)")
    p.add_argument("--data", required=True, help="prepared dataset folder (with train.h5)")
    p.add_argument("--out", required=True, help="output basis file (.npz)")
    p.set_defaults(func=_cmd_train_basis)


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the commands of this group."""
    _register_linerwkv(sub)
    _register_gdn(sub)
    _register_basis(sub)
