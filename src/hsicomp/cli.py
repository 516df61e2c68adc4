"""The ``hsicomp`` command line. Each command lives in the module that implements it.

Every module listed in ``COMMAND_MODULES`` defines ``register_cli(subparsers)``, which adds
its sub-commands and sets ``func`` (taking the parsed arguments, returning an exit code).
User errors (:class:`HsicompError`) are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hsicomp import __version__
from hsicomp.errors import HsicompError

COMMAND_MODULES = (
    "hsicomp.codec_cli",
    "hsicomp.datasets",
    "hsicomp.download",
    "hsicomp.evaluate",
    "hsicomp.aggregate",
    "hsicomp.plots",
    "hsicomp.bdrate",
    "hsicomp.train",
    "hsicomp.train_gdn",
    "hsicomp.model_cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="hsicomp",
        description="Hyperspectral image compression: codecs, datasets and evaluation.")
    parser.add_argument("--version", action="version", version=f"hsicomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HsicompError as exc:
        print(f"hsicomp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hsicomp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
