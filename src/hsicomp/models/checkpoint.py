"""Model files: saving, loading (always ``weights_only``), hashing and importing releases.

A model file is a ``torch.save`` of a plain dictionary::

    {"format": "hsicomp-linerwkv", "version": 1, "size": "XS",
     "config": {"width": 32, ...}, "state_dict": {...}, "metadata": {...}}

A GDN transform codec model (:mod:`hsicomp.models.gdn`) has ``"format": "hsicomp-gdn"``, no
``size`` and the ``TransformCodecConfig`` as ``config``; its state dict holds the per-band
normalisation and the frozen entropy tables.

Released LineRWKV checkpoints (a bare state dict with the same key names) are converted
with :func:`import_checkpoint`; their size is read off the tensor shapes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_write_bytes
from hsicomp.io.paths import input_file
from hsicomp.models.gdn import TransformCodec, TransformCodecConfig
from hsicomp.models.linerwkv import SIZES, LineRWKV, LineRWKVConfig

FORMAT = "hsicomp-linerwkv"
VERSION = 1
GDN_FORMAT = "hsicomp-gdn"
GDN_VERSION = 1


def _save(path: str | Path, fmt: str, version: int, model: torch.nn.Module,
          metadata: dict | None, **extra: Any) -> None:
    """Write a model file (format, version, ``extra`` fields, config, weights) atomically."""
    payload = {"format": fmt, "version": version, **extra,
               "config": dataclasses.asdict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "metadata": metadata or {}}
    # through memory: torch.save names its archive after the file, and the temporary file's
    # name is random, so writing to it directly would give other bytes every time
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> object:
    input_file(path, "model file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's advice to load with weights_only=False is dropped: model files never need it.
        found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global|$)",
                          str(exc), re.MULTILINE)
        reason = found.group(1).strip() if found else "not a plain torch.save file"
        raise HsicompError(f"{path}: not a weights-only hsicomp model file ({reason})") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HsicompError(f"{path}: not a readable model file ({first[:200]})") from None


def _load_network(path: Path, fmt: str, version: int, kind: str, not_ours: str,
                  build: Callable[[dict], torch.nn.Module]) -> tuple[Any, dict]:
    """The file's dict and the network ``build(config)`` makes, with the file's weights;
    one-line errors for another format (``not_ours``), version or configuration."""
    data = _load(path)
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise HsicompError(f"{path}: {not_ours}")
    if data.get("version") != version:
        raise HsicompError(f"{path}: unsupported {kind}model file version {data.get('version')}")
    try:
        model = build(data["config"])
        model.load_state_dict(data["state_dict"], strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise HsicompError(f"{path}: model file does not match its configuration ({exc})"
                           .splitlines()[0]) from None
    return model, data


def save_model(path: str | Path, model: LineRWKV, size: str, metadata: dict | None = None) -> None:
    """Write a model file atomically."""
    _save(path, FORMAT, VERSION, model, metadata, size=size)


def load_model(path: str | Path) -> tuple[LineRWKV, dict]:
    """Load a model file; return the network (eval mode, float32, CPU) and the file's dict."""
    model, data = _load_network(
        Path(path), FORMAT, VERSION, "",
        "not an hsicomp model file (use hsicomp import-checkpoint for released checkpoints)",
        lambda config: LineRWKV(LineRWKVConfig(**config)))
    return model.eval(), data


def save_gdn_model(path: str | Path, model: TransformCodec, metadata: dict | None = None) -> None:
    """Write a GDN transform codec model file atomically (freeze its entropy tables first)."""
    if not model.entropy.frozen:
        raise ValueError("freeze the entropy tables before saving a GDN model")
    _save(path, GDN_FORMAT, GDN_VERSION, model, metadata)


def load_gdn_model(path: str | Path) -> tuple[TransformCodec, dict]:
    """Load a GDN model file; return the network (eval mode, CPU, frozen tables) and the dict."""
    path = Path(path)
    model, data = _load_network(path, GDN_FORMAT, GDN_VERSION, "GDN ",
                                "not an hsicomp GDN model file",
                                lambda config: TransformCodec(TransformCodecConfig(**config)))
    if not model.entropy.frozen:
        raise HsicompError(f"{path}: GDN model has no frozen entropy tables")
    return model.eval(), data


def model_format(path: str | Path) -> str:
    """The ``format`` of a model file (HsicompError when it is not a readable model file)."""
    data = _load(Path(path))
    return str(data.get("format")) if isinstance(data, dict) else "unknown"


def model_hash(model: torch.nn.Module) -> str:
    """sha256 of the weights (keys and float32 little-endian values, in key order)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().to(torch.float32).contiguous().numpy().astype("<f4")
                 .tobytes())
    return h.hexdigest()


def config_from_state_dict(state_dict: dict) -> LineRWKVConfig:
    """Infer the network size from the key names and shapes of a LineRWKV state dict."""
    try:
        width = int(state_dict["encoder.conv_in.weight"].shape[0])
    except (KeyError, AttributeError, IndexError):
        raise HsicompError("not a LineRWKV state dict (no encoder.conv_in.weight)") from None

    def count(pattern: str) -> int:
        found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
        return len(found)

    return LineRWKVConfig(width=width,
                          n_enc=1 + count(r"encoder\.convs\.(\d+)\."),
                          n_lines=count(r"blocks_lines\.(\d+)\."),
                          n_bands=count(r"blocks_bands\.(\d+)\."),
                          n_dec=1 + count(r"decoder\.convs\.(\d+)\."))


def size_name(config: LineRWKVConfig) -> str:
    """The released size name of a configuration, or 'custom'."""
    return next((name for name, c in SIZES.items() if c == config), "custom")


def import_checkpoint(src: str | Path, dst: str | Path, release: str | None = None) -> str:
    """Convert a released LineRWKV checkpoint into an hsicomp model file; return the size.

    With ``release`` (a size name), ``src`` must be that published checkpoint, byte for byte,
    and the converted weights must hash to the published ones
    (:data:`hsicomp.models.release.RELEASE`). The model file records the checkpoint's sha256.
    """
    from hsicomp.models.release import check_release, file_sha256

    src = Path(src)
    published = check_release(src, release) if release is not None else None
    data = _load(src)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise HsicompError(f"{src}: not a state dict of tensors")
    state_dict = {k.removeprefix("module."): v for k, v in data.items()}
    try:
        config = config_from_state_dict(state_dict)
        model = LineRWKV(config)
        model.load_state_dict(state_dict, strict=True)
    except HsicompError as exc:
        raise HsicompError(f"{src}: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise HsicompError(f"{src}: keys or shapes do not match LineRWKV "
                           f"({str(exc).splitlines()[0][:200]})") from None
    size = size_name(config)
    model = model.float()
    if published is not None and (size != release or model_hash(model) != published.weights_sha256):
        raise HsicompError(f"{src}: converts to LineRWKV {size} with weights "
                           f"{model_hash(model)[:16]}..., not the released {release}")
    save_model(dst, model, size, metadata={"imported_from": src.name,
                                           "source_sha256": file_sha256(src)})
    return size
