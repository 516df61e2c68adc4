"""The ``hsicomp`` command line: one module per group of commands (``codec``, ``data``,
``evaluate``, ``figures``, ``train``, ``model``); option values they share are parsed by
:mod:`hsicomp.cli.options`.

Every module listed in ``COMMAND_MODULES`` defines ``register_cli(subparsers)``, which adds
its sub-commands and sets ``func`` (taking the parsed arguments, returning an exit code).
User errors (:class:`HsicompError`, OS errors such as a full disk, bad command-line
arguments) are printed as one line ``hsicomp: error: ...``, without a traceback. Before a
command runs, each of its output files (:data:`OUTPUTS`) is checked not to be one of its
input files and not to be a directory, device or pipe (:func:`hsicomp.io.paths.check_output`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hsicomp import __version__
from hsicomp.errors import HsicompError
from hsicomp.io.paths import check_output, os_error_text

COMMAND_MODULES = (
    "hsicomp.cli.codec",
    "hsicomp.cli.data",
    "hsicomp.cli.evaluate",
    "hsicomp.cli.figures",
    "hsicomp.cli.train",
    "hsicomp.cli.model",
)

#: Output file arguments (``dest`` names) of each command that reads and writes files.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "encode": ("output",), "decode": ("output",), "import-checkpoint": ("out",),
    "download": ("out",), "extract": ("stamp",), "encode-shard": ("timings", "band_bits"),
    "verify-shard": ("out",), "aggregate": ("rd", "per_patch"), "bdrate": ("out",),
    "compare-rates": ("out",),
    "plot-rd": ("png", "pdf"), "plot-rate-error": ("png", "pdf"),
    "plot-lossless": ("png", "pdf"), "band-rates": ("out",), "plot-band-rates": ("png", "pdf"),
    "error-image": ("png", "pdf"), "spectral-signature": ("png", "pdf"), "train": ("out",),
    "train-gdn": ("out",), "train-basis": ("out",),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser that reports a bad command line in one line ``hsicomp: error:``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print the one-line error with a pointer to ``--help``; exit with status 2."""
        self.exit(2, f"hsicomp: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = OneLineParser(
        prog="hsicomp",
        description="Hyperspectral image compression: codecs, datasets and evaluation.")
    parser.add_argument("--version", action="version", version=f"hsicomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def _paths(value: object) -> list[str | os.PathLike]:
    """The path-like values among a parsed argument (a list for ``nargs`` arguments)."""
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, str | os.PathLike)]


def check_outputs(args: argparse.Namespace) -> None:
    """HsicompError when an output file of the command is one of its inputs or cannot be
    replaced by a regular file (every other path-like argument counts as an input)."""
    outputs = OUTPUTS.get(args.command, ())
    inputs = [p for key, value in vars(args).items() if key not in outputs
              for p in _paths(value)]
    for key in outputs:
        for path in _paths(getattr(args, key, None)):
            check_output(path, inputs)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad command line (already printed)
        return int(exc.code or 0)
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except HsicompError as exc:
        print(f"hsicomp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hsicomp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        print(f"hsicomp: error: {os_error_text(exc)}", file=sys.stderr)
        return 2
