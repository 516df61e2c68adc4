"""Command line for model files (kept free of heavy imports until a command runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_import(args: argparse.Namespace) -> int:
    from hsicomp.models.checkpoint import import_checkpoint

    out = args.out or str(Path(args.checkpoint).with_suffix("")) + ".hsicomp.pt"
    size = import_checkpoint(args.checkpoint, out, args.release)
    checked = f" (the released {size}, sha256 checked)" if args.release else ""
    print(f"{out}: LineRWKV {size} imported from {args.checkpoint}{checked}")
    return 0


def _cmd_model_info(args: argparse.Namespace) -> int:
    from hsicomp.models.checkpoint import (
        GDN_FORMAT,
        load_gdn_model,
        load_model,
        model_format,
        model_hash,
    )

    if model_format(args.model) == GDN_FORMAT:
        model, data = load_gdn_model(args.model)
        print("model: gdn transform codec")
    else:
        model, data = load_model(args.model)
        print(f"size: {data['size']}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config: {data['config']}")
    print(f"parameters: {n_params}")
    print(f"weights_sha256: {model_hash(model)}")
    for key, value in sorted(data.get("metadata", {}).items()):
        if key != "settings":
            print(f"{key}: {value}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add ``hsicomp import-checkpoint`` and ``hsicomp model-info``."""
    p = sub.add_parser("import-checkpoint",
                       help="convert a released LineRWKV checkpoint into an hsicomp model file")
    p.add_argument("checkpoint", help="released checkpoint (.pth state dict)")
    p.add_argument("out", nargs="?",
                   help="output model file (default: CHECKPOINT stem + .hsicomp.pt)")
    p.add_argument("--release", choices=["XS", "S", "M", "L"],
                   help="require CHECKPOINT to be the authors' published checkpoint of this "
                        "size (sha256 and converted weights checked)")
    p.set_defaults(func=_cmd_import)
    p = sub.add_parser("model-info", help="print the size, parameter count and hash of a model "
                       "(LineRWKV or GDN)")
    p.add_argument("model", help="hsicomp model file (.pt)")
    p.set_defaults(func=_cmd_model_info)
