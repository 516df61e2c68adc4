"""Commands that fetch and prepare data: ``prepare``, ``download``, ``extract``."""

from __future__ import annotations

import argparse
from pathlib import Path

from hsicomp.cli.options import json_object
from hsicomp.data.datasets import SPLITS, prepare
from hsicomp.data.download import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    DEFAULT_MAX_EXTRACTED_BYTES,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MIN_RATE,
    DEFAULT_RATE_WINDOW,
    download,
    safe_extract,
)
from hsicomp.io.atomic import atomic_write_text


def _cmd_prepare(args: argparse.Namespace) -> int:
    spec = json_object(args.spec, "--spec")
    records = prepare(spec, Path(args.out), progress=not args.no_progress)
    counts = {s: sum(r.split == s for r in records) for s in SPLITS}
    clipped = sum(r.clipped_low + r.clipped_high for r in records)
    nodata = sum(r.nodata for r in records)
    print(f"{args.out}: {counts} patches, {clipped} clipped samples, {nodata} nodata samples")
    return 0


def _register_datasets(sub: argparse._SubParsersAction) -> None:
    """Add ``hsicomp prepare``."""
    p = sub.add_parser("prepare",
                       help="prepare a dataset (BSQ test patches, HDF5 splits, manifest)")
    p.add_argument("--spec", required=True, help="dataset description as a JSON object")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_prepare)


def _cmd_download(args: argparse.Namespace) -> int:
    path = download(args.url, Path(args.out), args.md5, retries=args.retries,
                    timeout=args.timeout, progress=not args.no_progress,
                    max_bytes=args.max_bytes, deadline=args.deadline, min_rate=args.min_rate,
                    rate_window=args.rate_window)
    print(path)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    archive = Path(args.archive)
    stamp = Path(args.stamp)
    stamp.unlink(missing_ok=True)  # a stamp only ever describes a finished extraction
    count = safe_extract(archive, Path(args.dest), max_bytes=args.max_bytes,
                         max_members=args.max_members)
    atomic_write_text(stamp, f"archive: {archive.name}\nmembers: {count}\n")
    print(f"{archive.name}: extracted {count} members into {args.dest}")
    return 0


def _register_download(sub: argparse._SubParsersAction) -> None:
    """Add the ``download`` and ``extract`` commands."""
    p = sub.add_parser("download", help="download a file with resume and md5 verification",
                       description="Download URL to PATH, resuming interrupted transfers, "
                                   "and verify its MD5.")
    p.add_argument("--url", required=True, help="URL to download")
    p.add_argument("--md5", required=True, metavar="HEX", help="expected MD5 (32 hex digits)")
    p.add_argument("--out", required=True, metavar="PATH", help="destination file")
    p.add_argument("--retries", type=int, default=5, metavar="N",
                   help="retries on network errors (default: 5)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="socket timeout in seconds (default: 60)")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_DOWNLOAD_BYTES, metavar="N",
                   help="stop (and remove the partial file) once the body passes N bytes "
                        "(default: %(default)s)")
    p.add_argument("--deadline", type=float, default=DEFAULT_DEADLINE, metavar="S",
                   help="give up after S seconds, retries included; the partial file is kept "
                        "for resuming (default: %(default)g)")
    p.add_argument("--min-rate", type=float, default=DEFAULT_MIN_RATE, metavar="B",
                   help="drop and retry a connection averaging under B bytes/s over the rate "
                        "window; 0 = no minimum (default: %(default)g)")
    p.add_argument("--rate-window", type=float, default=DEFAULT_RATE_WINDOW, metavar="S",
                   help="seconds over which --min-rate is averaged (default: %(default)g)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("extract", help="safely extract a tar archive and write a stamp file",
                       description="Extract ARCHIVE into DIR: only folders and regular files, "
                                   "through a temporary folder moved into place when complete; "
                                   "write the stamp file once the extraction is complete.")
    p.add_argument("archive", metavar="ARCHIVE", help="tar or tar.gz archive")
    p.add_argument("--dest", required=True, metavar="DIR", help="destination folder")
    p.add_argument("--stamp", required=True, metavar="FILE",
                   help="file written after a complete extraction")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_EXTRACTED_BYTES, metavar="N",
                   help="refuse an archive that unpacks to more than N bytes "
                        "(default: %(default)s)")
    p.add_argument("--max-members", type=int, default=DEFAULT_MAX_MEMBERS, metavar="N",
                   help="refuse an archive of more than N members (default: %(default)s)")
    p.set_defaults(func=_cmd_extract)


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the commands of this group."""
    _register_datasets(sub)
    _register_download(sub)
