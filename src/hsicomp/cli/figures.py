"""Figure commands: ``plot-rd``, ``plot-rate-error``, ``plot-lossless``, ``band-rates``,
``plot-band-rates``, ``error-image``, ``spectral-signature``."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from hsicomp.cli.options import json_object
from hsicomp.data.datasets import read_band_table
from hsicomp.errors import HsicompError
from hsicomp.evaluation.one_patch import decode_patch, spectral_signatures, write_band_rates
from hsicomp.evaluation.rd_table import read_rd
from hsicomp.figures.plots import (
    plot_band_rates,
    plot_error_image,
    plot_lossless,
    plot_rate_error,
    plot_rd,
    plot_spectral_signature,
)

# --------------------------------------------------------------------------- command line


def _done(args: argparse.Namespace) -> int:
    print(f"wrote {args.png}" + (f" and {args.pdf}" if args.pdf else ""), file=sys.stderr)
    return 0


def _peak(text: str) -> tuple[str, float]:
    """``DATASET=VALUE`` of ``--peak``."""
    name, sep, value = text.rpartition("=")
    try:
        peak = float(value)
    except ValueError:
        peak = math.nan
    if not sep or not name or not peak > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not DATASET=PEAK with a peak above 0")
    return name, peak


def _cmd_plot_rd(args: argparse.Namespace) -> int:
    plot_rd(args.rd_csv, args.png, args.pdf, peaks=dict(args.peak))
    return _done(args)


def _cmd_plot_rate_error(args: argparse.Namespace) -> int:
    plot_rate_error(args.rd_csv, args.png, args.pdf)
    return _done(args)


def _cmd_plot_lossless(args: argparse.Namespace) -> int:
    plot_lossless(args.rd_csv, args.png, args.pdf)
    return _done(args)


def _band_sources(text: str) -> dict[str, dict]:
    """The ``--sources`` object: label -> {"model": NAME, "files": [band-bits CSV, ...]}."""
    sources = json_object(text, "--sources", "a JSON object: label -> {model, files}")
    for label, source in sources.items():
        if not isinstance(source, dict) or set(source) != {"model", "files"} \
                or not isinstance(source["files"], list) or not source["files"]:
            raise HsicompError(f"--sources entry {label}: expected an object with model and "
                               f"files (a non-empty list of band-bits CSVs)")
    if not sources:
        raise HsicompError("--sources: no codec labels given")
    return sources


def _cmd_band_rates(args: argparse.Namespace) -> int:
    sources = _band_sources(args.sources)
    rows = write_band_rates(args.manifest, sources, args.delta, args.out, args.patch)
    print(f"band rates of {len(sources)} codecs ({len(rows)} rows) -> {args.out}",
          file=sys.stderr)
    return 0


def _cmd_plot_band_rates(args: argparse.Namespace) -> int:
    plot_band_rates(args.band_csv, args.png, args.pdf)
    return _done(args)


def _cmd_error_image(args: argparse.Namespace) -> int:
    params = json_object(args.params, "--params")
    patch = decode_patch(args.manifest, args.bitstreams, args.codec, params, args.delta,
                         args.patch, args.peak)
    label = args.label or args.codec
    name = label if label == args.codec else f"{label} ({args.codec})"
    plot_error_image(patch, name, args.delta, args.png, args.pdf, args.band)
    return _done(args)


def _pixel(text: str) -> tuple[int, int]:
    """``ROW,COL`` of ``--pixel``."""
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROW,COL") from None
    return row, col


def _cmd_spectral_signature(args: argparse.Namespace) -> int:
    sources = json_object(args.sources, "--sources",
                          "a JSON object: label -> {codec, models}")
    for label, source in sources.items():
        if not isinstance(source, dict) or set(source) != {"codec", "models"} \
                or not isinstance(source["models"], dict):
            raise HsicompError(f"--sources entry {label}: expected an object with codec and "
                               f"models (model -> {{params, bitstreams}})")
    original, signatures = spectral_signatures(
        args.manifest, read_rd(args.rd_csv), args.dataset, sources, args.rate, args.patch,
        args.pixel, args.peak)
    rec_pixel = "centre pixel" if args.pixel is None else f"pixel {args.pixel}"
    title = (f"{args.dataset}, {args.patch or 'first test patch'}, {rec_pixel}: each codec at "
             f"its rate nearest {args.rate:g} bpppc")
    plot_spectral_signature(original, signatures, read_band_table(args.manifest.parent), title,
                            args.png, args.pdf)
    return _done(args)


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--png", type=Path, required=True, help="output PNG")
    p.add_argument("--pdf", type=Path, help="output PDF (optional)")


def _rd_command(sub: argparse._SubParsersAction, name: str, help_text: str, func: Any) -> None:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("rd_csv", type=Path, metavar="RD_CSV", help="rate-distortion summary CSV")
    _outputs(p)
    p.set_defaults(func=func)


def _patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", type=Path, required=True, help="patch manifest CSV")
    p.add_argument("--patch", help="test patch id (default: the first test patch)")
    p.add_argument("--delta", type=int, default=0,
                   help="maximum absolute error (default 0 = lossless)")


def _register_plots(sub: argparse._SubParsersAction) -> None:
    """Add the figure commands: ``plot-rd``, ``plot-rate-error``, ``plot-lossless``,
    ``band-rates``, ``plot-band-rates`` and ``error-image``."""
    _rd_command(sub, "plot-rd", "draw rate-distortion curves from an rd CSV", _cmd_plot_rd)
    sub.choices["plot-rd"].add_argument(
        "--peak", type=_peak, action="append", default=[], metavar="DATASET=PEAK",
        help="PSNR peak of a dataset, shown in its panel's title (repeatable)")
    _rd_command(sub, "plot-rate-error", "draw max. absolute error against rate from an rd CSV",
                _cmd_plot_rate_error)
    _rd_command(sub, "plot-lossless", "bar chart of the lossless rates of an rd CSV",
                _cmd_plot_lossless)

    p = sub.add_parser("band-rates", help="the bits of every band of one test patch per "
                       "codec, from the band-bits CSVs its encode jobs wrote")
    _patch_args(p)
    p.add_argument("--sources", required=True, metavar="JSON",
                   help='JSON object label -> {"model": NAME, "files": [band-bits CSV, ...]}')
    p.add_argument("--out", type=Path, required=True, help="output CSV")
    p.set_defaults(func=_cmd_band_rates)

    p = sub.add_parser("plot-band-rates", help="draw the per-band rates written by band-rates")
    p.add_argument("band_csv", type=Path, metavar="BAND_CSV", help="band-rates CSV")
    _outputs(p)
    p.set_defaults(func=_cmd_plot_band_rates)

    p = sub.add_parser("error-image", help="original, reconstruction and error map of one "
                       "band of one test patch, decoded from its bitstream")
    _patch_args(p)
    p.add_argument("--bitstreams", type=Path, nargs="+", required=True, metavar="DIR",
                   help="bitstream folders of the evaluated point (one per shard)")
    p.add_argument("--codec", required=True, help="codec name (see `hsicomp codecs`)")
    p.add_argument("--label", help="name of the codec's configuration entry (default: codec)")
    p.add_argument("--params", default="{}", help="decoder parameters as a JSON object")
    p.add_argument("--band", type=int, help="band to show (default: the middle band)")
    p.add_argument("--peak", type=float, help="PSNR peak (default 2**bit_depth - 1)")
    _outputs(p)
    p.set_defaults(func=_cmd_error_image)


def _register_signature(sub: argparse._SubParsersAction) -> None:
    """Add the ``spectral-signature`` command."""
    p = sub.add_parser("spectral-signature", help="one pixel's spectrum and each lossy "
                       "codec's reconstruction of it, decoded from verified bitstreams")
    p.add_argument("rd_csv", type=Path, metavar="RD_CSV",
                   help="rate-distortion summary CSV (chooses each codec's point)")
    p.add_argument("--manifest", type=Path, required=True, help="patch manifest CSV")
    p.add_argument("--dataset", required=True, help="dataset of the manifest in RD_CSV")
    p.add_argument("--patch", help="test patch id (default: the first test patch)")
    p.add_argument("--pixel", type=_pixel, help="ROW,COL of the pixel (default: the centre)")
    p.add_argument("--rate", type=float, required=True,
                   help="bits per sample: each codec is shown at its point nearest it")
    p.add_argument("--sources", required=True, metavar="JSON",
                   help='JSON object label -> {"codec": NAME, "models": {MODEL: '
                   '{"params": {...}, "bitstreams": [DIR, ...]}}}')
    p.add_argument("--peak", type=float, help="PSNR peak (default 2**bit_depth - 1)")
    _outputs(p)
    p.set_defaults(func=_cmd_spectral_signature)


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the commands of this group."""
    _register_plots(sub)
    _register_signature(sub)
