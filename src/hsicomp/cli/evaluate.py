"""Evaluation commands: ``encode-shard``, ``verify-shard``, ``aggregate``, ``bdrate``,
``compare-rates``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hsicomp.cli.options import json_object
from hsicomp.evaluation.aggregate import aggregate
from hsicomp.evaluation.bdrate import write_bdrate
from hsicomp.evaluation.metrics import format_value
from hsicomp.evaluation.rd_table import read_rd
from hsicomp.evaluation.references import COLUMNS, compare
from hsicomp.evaluation.shards import display_name, encode_shard, verify_shard
from hsicomp.io.table import write_table


def _cmd_encode(args: argparse.Namespace) -> int:
    params = json_object(args.params, "--params")
    n = encode_shard(args.manifest, args.shard, args.shards, args.codec, params, args.delta,
                     args.out_dir, args.timings, args.threads, args.label,
                     progress=not args.no_progress, band_bits_csv=args.band_bits)
    print(f"encoded {n} patches with {display_name(args.codec, args.label)} delta={args.delta} -> "
          f"{args.out_dir}", file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    params = json_object(args.params, "--params")
    rows = verify_shard(args.manifest, args.shard, args.shards, args.bitstreams, args.timings,
                        args.dataset, args.codec, args.model, args.delta, params, args.peak,
                        args.out, args.label, progress=not args.no_progress)
    print(f"verified {len(rows)} patches with {display_name(args.codec, args.label)} "
          f"delta={args.delta} -> {args.out}", file=sys.stderr)
    return 0


def _shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", type=Path, required=True, help="patch manifest CSV")
    p.add_argument("--shard", type=int, required=True, help="0-based shard index")
    p.add_argument("--shards", type=int, required=True, help="number of shards")
    p.add_argument("--codec", required=True, help="codec name (see `hsicomp codecs`)")
    p.add_argument("--label", help="name of the codec's configuration entry, written in the "
                   "CSV's codec column and in messages (default: the codec name)")
    p.add_argument("--params", default="{}", help="codec parameters as a JSON object")
    p.add_argument("--delta", type=int, required=True,
                   help="maximum absolute error (0 = lossless)")
    p.add_argument("--timings", type=Path, required=True, help="encode timings CSV")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (by default one bar over the patches, on stderr)")


def _register_shards(sub: argparse._SubParsersAction) -> None:
    """Add the ``encode-shard`` and ``verify-shard`` commands."""
    p = sub.add_parser("encode-shard", help="encode the test patches of one shard")
    _shard_args(p)
    p.add_argument("--out-dir", type=Path, required=True, help="folder for the .hsic files")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--band-bits", type=Path, help="CSV of the bits the codec spent on each "
                   "band of each patch (patch_id, band, bits)")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser("verify-shard", help="decode, check and measure one encoded shard")
    _shard_args(p)
    p.add_argument("--bitstreams", type=Path, required=True, help="folder of .hsic files")
    p.add_argument("--dataset", required=True, help="dataset name for the CSV")
    p.add_argument("--model", required=True, help="model name for the CSV")
    p.add_argument("--peak", type=float, required=True, help="PSNR peak value")
    p.add_argument("--out", type=Path, required=True, help="per-patch metrics CSV")
    p.set_defaults(func=_cmd_verify)


def _cmd_aggregate(args: argparse.Namespace) -> int:
    aggregate(args.metrics, args.rd, args.per_patch)
    print(f"aggregated {len(args.metrics)} metrics files -> {args.rd}", file=sys.stderr)
    return 0


def _register_aggregate(sub: argparse._SubParsersAction) -> None:
    """Add the ``aggregate`` command."""
    p = sub.add_parser("aggregate", help="summarise per-patch metrics into rate-distortion rows")
    p.add_argument("metrics", nargs="+", type=Path, metavar="METRICS_CSV",
                   help="per-patch metrics CSVs written by verify-shard (each row's bitstream "
                   "is checked against its recorded size and sha256; on any error both "
                   "outputs are removed)")
    p.add_argument("--rd", type=Path, required=True, help="rate-distortion summary CSV")
    p.add_argument("--per-patch", type=Path, required=True, help="combined per-patch CSV")
    p.set_defaults(func=_cmd_aggregate)


def _cmd_bdrate(args: argparse.Namespace) -> int:
    references = args.reference or ["ccsds123"]
    metrics = tuple(dict.fromkeys(args.metric or ["psnr"]))
    table = write_bdrate(args.rd_csv, references, args.out, metrics)
    done = sum(1 for row in table if row["bd_rate_percent"] != "")
    print(f"BD-rate of {done} of {len(table)} curves against {', '.join(references)} "
          f"({', '.join(metrics)}) -> {args.out}", file=sys.stderr)
    return 0


def _register_bdrate(sub: argparse._SubParsersAction) -> None:
    """Add the ``bdrate`` command."""
    p = sub.add_parser("bdrate", help="Bjontegaard delta rate of every curve of an rd CSV "
                       "against reference codecs, at equal PSNR or SAM")
    p.add_argument("rd_csv", type=Path, metavar="RD_CSV", help="rate-distortion summary CSV")
    p.add_argument("--reference", action="append",
                   help="codec label of a reference curve, or 'label model' for a codec "
                   "with several models (repeatable; default: ccsds123)")
    p.add_argument("--metric", action="append", choices=("psnr", "sam"),
                   help="quality at which rates are compared (repeatable; default: psnr)")
    p.add_argument("--out", type=Path, required=True, help="output BD-rate CSV")
    p.set_defaults(func=_cmd_bdrate)


def _cmd_compare(args: argparse.Namespace) -> int:
    references = json_object(args.references, "--references",
                             "a JSON object: name -> reference")
    rows = compare(read_rd(args.rd_csv), references)
    write_table(args.out, rows, COLUMNS, format_value)
    print(f"{args.out}: {len(rows)} rows against {len(references)} reference(s)")
    return 0


def _register_references(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare-rates`` command."""
    p = sub.add_parser("compare-rates", help="the rates of an rd CSV next to reference rates "
                       "measured elsewhere")
    p.add_argument("rd_csv", type=Path, metavar="RD_CSV", help="rate-distortion summary CSV")
    p.add_argument("--references", required=True,
                   help="JSON object: name -> {source, compare, rates, not_decoded}")
    p.add_argument("--out", type=Path, required=True, help="output CSV")
    p.set_defaults(func=_cmd_compare)


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the commands of this group."""
    _register_shards(sub)
    _register_aggregate(sub)
    _register_bdrate(sub)
    _register_references(sub)
