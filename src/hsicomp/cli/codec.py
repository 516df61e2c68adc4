"""Command-line front end of the codecs: ``hsicomp encode``, ``decode``, ``info`` and
``codecs``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hsicomp.codecs import available_codecs, codec_class, decode_bytes, get_codec
from hsicomp.errors import HsicompError
from hsicomp.evaluation.metrics import bits_per_sample
from hsicomp.io.atomic import atomic_write_bytes
from hsicomp.io.container import add_metadata, unpack
from hsicomp.io.cubeio import (
    FILE_NODATA,
    LAYOUTS,
    SUFFIXES,
    cube_files,
    cube_format,
    format_family,
    read_product,
    write_cube,
)
from hsicomp.io.metadata import describe_metadata, dump_metadata, load_metadata
from hsicomp.io.paths import check_output, input_file


def parse_dims(text: str) -> tuple[int, int, int]:
    """Parse ``B,R,C`` into three positive integers."""
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected BANDS,ROWS,COLS positive integers, "
                                         f"got {text!r}")
    return dims  # type: ignore[return-value]


def parse_threads(text: str) -> int:
    """Parse a thread count: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def parse_nodata(text: str) -> float | str | None:
    """Parse a nodata value: a number, ``nan``, ``none`` (no nodata) or ``file`` (the value
    the input file declares)."""
    if text.strip().lower() == "none":
        return None
    if text.strip().lower() == FILE_NODATA:
        return FILE_NODATA
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, nan, none or file, got "
                                         f"{text!r}") from None


def parse_param(text: str) -> tuple[str, str]:
    """Parse ``key=value``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value


def read_hsic(path: str | Path) -> bytes:
    """The bytes of a .hsic file; HsicompError when it cannot be read."""
    path = input_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read ({exc.strerror or exc})") from None


def parse_coder(text: str) -> str:
    """A --coder value; ``ccsds``, the old name of ``sample-adaptive``, is still accepted."""
    return "sample-adaptive" if text == "ccsds" else text


def _params(args: argparse.Namespace, codec: str) -> dict[str, str]:
    """Codec parameters: the --param pairs plus the --model/--coder/--threads shortcuts
    (--threads goes only to a codec with a ``threads`` parameter; the others ignore it)."""
    params = dict(args.param)
    cls = codec_class(codec)
    for key in ("model", "coder", "threads"):
        value = getattr(args, key, None)
        if value is None or (key == "threads" and "threads" not in getattr(cls, "defaults", {})):
            continue
        params[key] = str(value)
    return params


def cmd_encode(args: argparse.Namespace) -> int:
    """Encode a cube file into one .hsic file."""
    name = args.codec or ("linerwkv" if args.model else None)
    if name is None:
        raise HsicompError("give --codec NAME (or --model PATH for the linerwkv codec)")
    check_output(args.output, cube_files(args.input))
    codec = get_codec(name, _params(args, name))
    product = read_product(args.input, dims=args.dims, dataset=args.dataset,
                           layout=args.layout, bands=args.bands, nodata=args.nodata,
                           bit_depth=args.bit_depth)
    cube = product.cube
    block = dump_metadata(product.metadata, str(args.input))
    start = time.perf_counter()
    data = codec.encode(cube, args.delta, args.bit_depth, band_list=product.band_list)
    seconds = time.perf_counter() - start
    data = add_metadata(data, block, str(args.output))
    atomic_write_bytes(args.output, data)
    bands, rows, cols = cube.shape
    extra = f", {len(block)} of them metadata" if block else ""
    print(f"{args.output}: {bands}x{rows}x{cols} {codec.name} delta={args.delta} "
          f"{len(data)} bytes{extra} {bits_per_sample(len(data), cube.shape):.4f} bits/sample "
          f"({seconds:.2f} s)")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    """Decode a .hsic file into a cube file of the format given by OUTPUT's extension."""
    cube_format(args.output)
    for path in cube_files(args.output, written=True):
        check_output(path, [args.input])
    data = read_hsic(args.input)
    codec = unpack(data, str(args.input))[0].codec
    start = time.perf_counter()
    header, cube = decode_bytes(data, _params(args, codec), source=str(args.input))
    seconds = time.perf_counter() - start
    meta = load_metadata(header.metadata, str(args.input))
    write_cube(args.output, cube, metadata=meta)
    note = ""
    if meta.get("format"):
        same = meta["format"] == format_family(cube_format(args.output))
        note = (f"; the input's {meta['format']} metadata written back" if same else
                f"; samples only, the input was {meta['format']}")
    print(f"{args.output}: {header.bands}x{header.rows}x{header.cols} {header.codec} "
          f"delta={header.delta} {bits_per_sample(len(data), header.shape):.4f} bits/sample "
          f"({seconds:.2f} s{note})")
    return 0


def _runs(bands: list[int]) -> str:
    parts: list[str] = []
    start = prev = bands[0]
    for b in [*bands[1:], None]:
        if b is not None and b == prev + 1:
            prev = b
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if b is not None:
            start = prev = b
    return ",".join(parts)


def cmd_info(args: argparse.Namespace) -> int:
    """Print the header fields of a .hsic file."""
    data = read_hsic(args.input)
    header, side_info, payload = unpack(data, str(args.input))
    bands = "all" if header.band_list is None else _runs(header.band_list)
    rows = [
        ("file", str(args.input)),
        ("format_version", str(header.version)),
        ("codec", header.codec),
        ("dims", f"{header.bands}x{header.rows}x{header.cols} (bands x rows x cols)"),
        ("bit_depth", str(header.bit_depth)),
        ("delta", str(header.delta)),
        ("lossy", "yes (no maximum-error guarantee)" if header.lossy else "no"),
        ("flags", f"0x{header.flags:04x}"),
        ("band_list", bands),
        ("metadata_bytes", str(len(header.metadata))),
        ("side_info_bytes", str(len(side_info))),
        ("payload_bytes", str(len(payload))),
        ("file_bytes", str(len(data))),
        ("bits_per_sample", f"{bits_per_sample(len(data), header.shape):.4f}"),
    ]
    cls = codec_class(header.codec)
    if header.check is not None:
        covers = f" of the decoded {cls.check_covers}" if cls is not None else ""
        rows.append(("check", f"0x{header.check:08x} (CRC-32{covers}, verified on decode)"))
    if cls is not None:
        rows += cls.describe_side_info(side_info)
    rows += describe_metadata(load_metadata(header.metadata, str(args.input)))
    for key, value in rows:
        print(f"{key}: {value}")
    return 0


def codec_kind(cls: type) -> str:
    """What a codec class guarantees: lossy, lossless only, or lossless and near-lossless."""
    if cls.lossy:
        return "lossy (no error bound)"
    if cls.lossless_only:
        return "lossless"
    return "lossless and near-lossless (max error delta)"


def cmd_codecs(args: argparse.Namespace) -> int:
    """List the registered codecs: summary, kind and parameters with their defaults."""
    for name in available_codecs():
        cls = codec_class(name)
        summary = (cls.__doc__ or "").strip().split("\n")[0].replace("``", "")
        params = ", ".join(f"{k}={v!r}" for k, v in cls.defaults.items()) or "none"
        print(f"{name}: {summary}")
        print(f"    {codec_kind(cls)}; parameters: {params}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add the ``encode``, ``decode``, ``info`` and ``codecs`` sub-commands."""
    formats = ", ".join(SUFFIXES)
    param_help = "codec parameter (repeatable)"
    threads_help = ("the threads parameter of the codecs that have one (linerwkv, linerwkv-lms, "
                    "gdn, gdn-gain, gdn-ohm, coolchic); the others ignore it")

    p = sub.add_parser("encode", help="compress a cube into one .hsic file",
                       description=f"Compress a cube ({formats}) into one .hsic file.")
    p.add_argument("input", help="input cube")
    p.add_argument("output", help="output .hsic file")
    p.add_argument("--codec", default=None,
                   help="codec name (see `hsicomp codecs`; linerwkv is the default with "
                        "--model)")
    p.add_argument("--model", default=None,
                   help="model file (linerwkv, linerwkv-lms and the gdn codecs)")
    p.add_argument("--coder", type=parse_coder, choices=("arith", "sample-adaptive"),
                   default=None, help="linerwkv residual coder (default arith)")
    p.add_argument("--threads", type=parse_threads, default=None, metavar="N", help=threads_help)
    p.add_argument("--delta", type=int, default=0,
                   help="maximum absolute error per sample (0 = lossless, default; a lossy "
                        "codec takes only 0 = no bound)")
    p.add_argument("--bit-depth", type=int, default=16,
                   help="bit depth of the samples, 1..16 (default 16)")
    p.add_argument("--dims", type=parse_dims, default=None, metavar="B,R,C",
                   help="bands,rows,cols of a raw .bsq/.raw input")
    p.add_argument("--dataset", default=None, help="dataset of an HDF5 input")
    p.add_argument("--layout", choices=tuple(LAYOUTS), default=None,
                   help="axis order of a .npy or HDF5 input: "
                        + ", ".join(f"{k} {v}" for k, v in LAYOUTS.items())
                        + " (needed when the shape looks like (rows, cols, bands))")
    p.add_argument("--bands", default=None, metavar="LIST",
                   help="bands to code: 0-based indices and a-b ranges (e.g. 0-125,141-159), "
                        "enmap202 or all (default all)")
    p.add_argument("--nodata", type=parse_nodata, default=FILE_NODATA, metavar="VALUE",
                   help="value of missing samples: a number, nan, none, or file (default: "
                        "the nodata value the GeoTIFF or ENVI input declares); decoding "
                        "gives them back")
    p.add_argument("--param", type=parse_param, action="append", default=[],
                   metavar="KEY=VALUE", help=param_help)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decompress a .hsic file",
                       description=f"Decompress a .hsic file; the output format ({formats}) "
                                   f"follows OUTPUT's extension. Samples come back in the "
                                   f"input's type, and the input's metadata when OUTPUT has "
                                   f"its format.")
    p.add_argument("input", help="input .hsic file")
    p.add_argument("output", help="output cube")
    p.add_argument("--model", default=None,
                   help="model file the input was coded with (linerwkv and gdn files)")
    p.add_argument("--threads", type=parse_threads, default=None, metavar="N", help=threads_help)
    p.add_argument("--param", type=parse_param, action="append", default=[],
                   metavar="KEY=VALUE", help=param_help)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="print the header and metadata of a .hsic file")
    p.add_argument("input", help=".hsic file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("codecs", help="list the codecs, their kind and parameters")
    p.set_defaults(func=cmd_codecs)
