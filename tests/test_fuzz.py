"""Fuzzing the decoders (every codec): damaged, spliced and foreign files give one-line
errors, never a crash, a hang or a huge allocation; forged files (damaged, then given a
matching crc32) decode to the original cube or give a one-line error, never wrong samples;
bad encoder inputs are refused the same way.

The number of mutations per valid file is ``HSICOMP_FUZZ_ITERATIONS`` (default 25); set it to
thousands for a long run (``-s`` prints the outcomes of the forged files per codec).
"""

from __future__ import annotations

import faulthandler
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import gdn_test_config, random_gdn_model_file, tool_env

from hsicomp.codecs import decode_bytes, get_codec
from hsicomp.errors import HsicompError
from hsicomp.io.container import MAX_METADATA_BYTES, add_metadata, pack, unpack
from hsicomp.io.metadata import dump_metadata, encode_mask, load_metadata, restore_samples
from hsicomp.models import SIZES, LineRWKV
from hsicomp.models.checkpoint import save_model

ITERATIONS = int(os.environ.get("HSICOMP_FUZZ_ITERATIONS", "25"))
#: Most memory one decode of a damaged small file may allocate (tracemalloc peak).
ALLOCATION_LIMIT = 64 << 20
#: Longest one decode of a damaged small file may take: a bound that catches hangs and
#: runaway loops, generous enough for a loaded machine (a normal decode takes milliseconds).
SECONDS_LIMIT = 60.0


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("fuzz") / "xs.pt"
    save_model(path, LineRWKV(SIZES["XS"]).eval(), "XS")
    return path


@pytest.fixture(scope="module")
def ohm_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = gdn_test_config().with_ohm(symbols=8, channels=6, min_channels=2)
    return random_gdn_model_file(tmp_path_factory.mktemp("fuzz-ohm") / "ohm.pt", config)


@pytest.fixture(scope="module")
def gdn_model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fuzz-gdn")
    return {"gdn": random_gdn_model_file(folder / "gdn.pt", gdn_test_config()),
            "gdn-gain": random_gdn_model_file(folder / "gain.pt", gdn_test_config(levels=2))}


@pytest.fixture(scope="module")
def decode_params(model_path: Path, ohm_model_path: Path,
                  gdn_model_paths: dict[str, Path]) -> dict[str, dict]:
    """Decoder parameters per codec name (the model files the valid files were coded with)."""
    return {"linerwkv": {"model": str(model_path)}, "linerwkv-lms": {"model": str(model_path)},
            "gdn-ohm": {"model": str(ohm_model_path)},
            **{name: {"model": str(path)} for name, path in gdn_model_paths.items()}}


@pytest.fixture(scope="module")
def valid_files(model_path: Path, ohm_model_path: Path,
                gdn_model_paths: dict[str, Path]) -> dict[str, bytes]:
    """Valid files of every codec (lossless, near-lossless and lossy) of one small cube."""
    rng = np.random.default_rng(0)
    base = np.cumsum(rng.integers(-40, 41, size=(5, 7, 9)), axis=2) + 2000
    cube = np.clip(base, 0, 4095).astype(np.uint16)
    files = {}
    for coder in ("arith", "sample-adaptive"):
        codec = get_codec("linerwkv", {"model": str(model_path), "coder": coder})
        files[f"linerwkv-{coder}"] = codec.encode(cube, 0, 12)
        files[f"linerwkv-{coder}-d3"] = codec.encode(cube, 3, 12)
    lms = get_codec("linerwkv-lms", {"model": str(model_path), "network": "on"})
    files["linerwkv-lms"] = lms.encode(cube, 0, 12)
    files["linerwkv-lms-d5"] = lms.encode(cube, 5, 12)
    # network auto: with this random model, the file coded without the network
    files["linerwkv-lms-auto"] = get_codec("linerwkv-lms", {"model": str(model_path)}).encode(
        cube, 0, 12)
    assert unpack(files["linerwkv-lms-auto"])[1][2 + 32] == 255
    for name in ("jpegls", "jpeg2000", "jpegxl", "raw"):
        files[name] = get_codec(name).encode(cube, 0, 12)
    files["jpegls-d2"] = get_codec("jpegls").encode(cube, 2, 12)
    files["ccsds123"] = get_codec("ccsds123").encode(cube, 2, 12)
    files["ccsds123-d0"] = get_codec("ccsds123").encode(cube, 0, 12)
    files["ccsds123-cascade"] = get_codec("ccsds123", {"coder": "arith", "cascade": 5}).encode(
        cube, 0, 12)
    files["gdn"] = get_codec("gdn", {"model": str(gdn_model_paths["gdn"])}).encode(cube, 0, 12)
    files["gdn-gain"] = get_codec("gdn-gain", {"model": str(gdn_model_paths["gdn-gain"]),
                                               "level": 0.7}).encode(cube, 0, 12)
    files["gdn-ohm"] = get_codec("gdn-ohm", {"model": str(ohm_model_path),
                                             "fraction": 0.5}).encode(cube, 0, 12)
    files["coolchic"] = get_codec("coolchic", {"iterations": 3}).encode(cube, 0, 12)
    # files with a metadata block (version 3), lossless and lossy
    block = dump_metadata(_METADATA)
    for name in ("raw", "ccsds123-d0", "linerwkv-arith", "gdn"):
        files[f"{name}-meta"] = add_metadata(files[name], block)
    return files


#: Metadata of the valid files that carry some: a GeoTIFF's, with a nodata mask.
_METADATA = {
    "format": "tiff", "dtype": "<f4",
    "nodata": {"value": -32768, "samples": 7, "mask": encode_mask(np.arange(5 * 7 * 9) < 7)},
    "tiff": {"crs": "EPSG:32633", "transform": [30.0, 0.0, 366015.0, 0.0, -30.0, 5806125.0],
             "nodata": -32768, "descriptions": [f"band {b}" for b in range(5)],
             "band_tags": [{"wavelength": str(400 + b)} for b in range(5)]},
}


def _mutations(data: bytes, others: list[bytes], rng: np.random.Generator):
    """Yield (kind, damaged bytes) variations of one valid file."""
    header, side, payload = unpack(data)
    for _ in range(ITERATIONS):
        kind = int(rng.integers(7))
        buf = bytearray(data)
        if kind == 0:  # truncated
            yield "truncated", bytes(buf[: int(rng.integers(len(buf)))])
        elif kind == 1:  # a few flipped bits
            for _ in range(int(rng.integers(1, 9))):
                pos = int(rng.integers(len(buf)))
                buf[pos] ^= 1 << int(rng.integers(8))
            yield "bit flips", bytes(buf)
        elif kind == 2:  # random bytes written over a stretch
            start = int(rng.integers(len(buf)))
            stop = min(len(buf), start + int(rng.integers(1, 17)))
            buf[start:stop] = rng.integers(0, 256, stop - start, dtype=np.uint8).tobytes()
            yield "overwritten", bytes(buf)
        elif kind in (3, 4):  # damaged payload or side info behind a valid checksum
            part = bytearray(payload if kind == 3 else side)
            if part and rng.random() < 0.7:
                for _ in range(int(rng.integers(1, 5))):
                    pos = int(rng.integers(len(part)))
                    part[pos] ^= 1 << int(rng.integers(8))
            else:
                part = part[: int(rng.integers(len(part) + 1))]
            new = (side, bytes(part)) if kind == 3 else (bytes(part), payload)
            yield "payload" if kind == 3 else "side info", pack(header, *new)
        elif kind == 5:  # another file's side info or payload behind this header
            other_header, other_side, other_payload = unpack(others[int(rng.integers(len(others)))])
            new = (other_side, payload) if rng.random() < 0.5 else (side, other_payload)
            yield "spliced", pack(header, *new)
        else:  # foreign data
            choice = int(rng.integers(3))
            if choice == 0:
                yield "foreign", rng.integers(0, 256, int(rng.integers(64)), np.uint8).tobytes()
            elif choice == 1:
                yield "foreign", b"\x89PNG\r\n\x1a\n" + bytes(buf[8:])
            else:
                yield "foreign", b"HSIC" + rng.integers(0, 256, 40, np.uint8).tobytes()


def _check_decode(data: bytes, params: dict, what: str) -> None:
    """Decode damaged bytes: a valid cube or a one-line HsicompError, bounded time and memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        header, cube = decode_bytes(data, params, source="f.hsic")
    except HsicompError as exc:
        message = str(exc)
        assert message and "\n" not in message, (what, message)
        assert message.startswith("f.hsic: "), (what, message)
    else:
        assert cube.dtype == np.uint16 and cube.shape == header.shape, what
        try:
            restore_samples(cube, load_metadata(header.metadata, "f.hsic"), "f.hsic")
        except HsicompError as exc:
            assert str(exc).startswith("f.hsic: ") and "\n" not in str(exc), (what, exc)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < SECONDS_LIMIT, what
    assert peak < ALLOCATION_LIMIT, (what, peak)


def test_damaged_files(valid_files: dict[str, bytes], decode_params: dict[str, dict]) -> None:
    rng = np.random.default_rng(int(os.environ.get("HSICOMP_FUZZ_SEED", "1")))
    others = list(valid_files.values())
    faulthandler.dump_traceback_later(600, exit=True)  # a hang fails the run instead of stalling
    try:
        for name, data in valid_files.items():
            for kind, damaged in _mutations(data, others, rng):
                try:
                    codec = unpack(damaged)[0].codec
                except HsicompError:
                    codec = name
                _check_decode(damaged, decode_params.get(codec, {}), f"{name} {kind}")
    finally:
        faulthandler.cancel_dump_traceback_later()


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _with_crc(body: bytes | bytearray) -> bytes:
    """``body`` followed by its crc32: what a forger (or a buggy writer) produces."""
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


def _forgeries(data: bytes, rng: np.random.Generator):
    """Yield (part, forged bytes): one part of a valid file changed, the crc32 made to match."""
    header, side, payload = unpack(data)
    body = data[:-4]
    tail = len(side) + _varint_size(len(side)) + len(payload) + _varint_size(len(payload)) + 4
    header_end = len(body) - tail  # end of the band list (of the metadata in version 3)
    parts = ("header", "side info", "payload", "check", "anywhere", "metadata")
    for _ in range(ITERATIONS):
        part = parts[int(rng.integers(6 if header.metadata else 5))]
        if part == "side info" and not side:
            part = "payload"
        if part == "metadata":  # another block behind the same check value
            edited = bytearray(header.metadata)
            if rng.random() < 0.8:
                pos = int(rng.integers(len(edited)))
                edited[pos] ^= 1 << int(rng.integers(8))
            else:
                edited = edited[: int(rng.integers(1, len(edited)))]
            forged = unpack(data)[0]
            forged.metadata = bytes(edited)
            yield part, pack(forged, side, payload)
            continue
        if part in ("side info", "payload"):
            edited = bytearray(side if part == "side info" else payload)
            if edited and rng.random() < 0.8:
                for _ in range(int(rng.integers(1, 4))):
                    pos = int(rng.integers(len(edited)))
                    edited[pos] ^= 1 << int(rng.integers(8))
            else:
                edited = edited[: int(rng.integers(len(edited) + 1))]
            new = (bytes(edited), payload) if part == "side info" else (side, bytes(edited))
            yield part, pack(header, *new)  # keeps the file's check value
            continue
        start, stop = {"header": (5, header_end), "check": (len(body) - 4, len(body)),
                       "anywhere": (0, len(body))}[part]
        edited = bytearray(body)
        pos = int(rng.integers(start, stop))
        if rng.random() < 0.5:
            edited[pos] ^= 1 << int(rng.integers(8))
        else:
            edited[pos] = (edited[pos] + int(rng.integers(1, 256))) % 256
        yield part, _with_crc(edited)


def test_forged_files_decode_to_the_original_or_fail(
        valid_files: dict[str, bytes], decode_params: dict[str, dict]) -> None:
    """Every codec: a file whose header, side info, payload or check value was changed and
    whose crc32 was recomputed gives the original cube or a one-line error, never other
    samples."""
    rng = np.random.default_rng(int(os.environ.get("HSICOMP_FUZZ_SEED", "2")))
    outcomes: dict[str, Counter] = {}
    faulthandler.dump_traceback_later(600, exit=True)
    try:
        for name, data in valid_files.items():
            original_header, original = decode_bytes(data, decode_params.get(
                unpack(data)[0].codec, {}))
            counts = outcomes.setdefault(name, Counter())
            for part, forged in _forgeries(data, rng):
                try:
                    codec = unpack(forged)[0].codec
                except HsicompError:
                    codec = name
                try:
                    header, cube = decode_bytes(forged, decode_params.get(codec, {}), "f.hsic")
                except HsicompError as exc:
                    message = str(exc)
                    assert message.startswith("f.hsic: ") and "\n" not in message, message
                    counts["error"] += 1
                    continue
                same = header == original_header and np.array_equal(cube, original)
                assert same, f"{name}: forged {part} decoded to other samples or metadata"
                counts["original"] += 1
    finally:
        faulthandler.cancel_dump_traceback_later()
    for name, counts in outcomes.items():
        print(f"{name}: {counts['original']} original, {counts['error']} one-line errors")


def _with_dims(data: bytes, bands: int, rows: int, cols: int) -> bytes:
    """``data`` with other dimensions in its header (crc32 recomputed)."""
    at = 4 + 2 + data[5] + 2  # magic, version, codec name, sample type and bit depth
    return _with_crc(data[:at] + struct.pack("<HII", bands, rows, cols) + data[at + 10:-4])


def _peak_of(call) -> int:
    """Peak traced allocation (bytes) of ``call()``."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_crafted_headers_do_not_exhaust_memory(valid_files: dict[str, bytes],
                                               decode_params: dict[str, dict]) -> None:
    """A band list of 65535 runs of 65535 bands, or dimensions of 2 x 2**20 x 2**20, give a
    one-line error before anything of their size is allocated, whatever the codec."""
    data = valid_files["raw"]
    at = 4 + 2 + data[5] + 18  # after the flags: the band list
    runs = struct.pack("<H", 0xFFFF) + struct.pack("<HH", 0, 0xFFFF) * 0xFFFF
    bomb = _with_crc(data[:at] + runs + data[at + 2:-4])

    def unpack_bomb() -> None:
        with pytest.raises(HsicompError, match="band list has 4294836225 bands, header says 5"):
            unpack(bomb, "f.hsic")

    assert _peak_of(unpack_bomb) < 8 << 20
    for name, valid in valid_files.items():
        huge = _with_dims(valid, 2, 1 << 20, 1 << 20)
        params = decode_params.get(unpack(valid)[0].codec, {})

        def decode_huge(huge: bytes = huge, params: dict = params) -> None:
            with pytest.raises(HsicompError, match=r"^f\.hsic: corrupt header \(2x1048576x"):
                decode_bytes(huge, params, "f.hsic")

        assert _peak_of(decode_huge) < 8 << 20, name


def test_crafted_metadata_does_not_exhaust_memory(valid_files: dict[str, bytes]) -> None:
    """A metadata length of 2**62, a block that unpacks to 64 MiB, JSON nested a million
    deep or a nodata mask that inflates past its cube give one-line errors, in bounded
    memory."""
    import lzma

    data = valid_files["raw-meta"]
    header, side, payload = unpack(data)
    at = len(data) - 4 - 4 - len(payload) - _varint_size(len(payload)) - len(side) \
        - _varint_size(len(side)) - len(header.metadata) - _varint_size(len(header.metadata))
    rest = data[at + _varint_size(len(header.metadata)):-4]
    huge = _with_crc(data[:at] + b"\xff" * 8 + b"\x3f" + rest)  # length 2**62 - 1

    def unpack_huge() -> None:
        with pytest.raises(HsicompError, match=r"^f\.hsic: corrupt header \(metadata block of "):
            unpack(huge, "f.hsic")

    assert _peak_of(unpack_huge) < 8 << 20
    filters = [{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
    bombs = {
        "more than": lzma.compress(b" " * (1 << 26), format=lzma.FORMAT_RAW, filters=filters),
        "not UTF-8 JSON": lzma.compress(b"[" * 1_000_000, format=lzma.FORMAT_RAW,
                                        filters=filters),
        "not an LZMA2 stream": b"\xff" * 100,
    }
    for needle, packed in bombs.items():
        assert len(packed) < MAX_METADATA_BYTES

        def load(block: bytes = b"\x01" + packed, needle: str = needle) -> None:
            with pytest.raises(HsicompError, match=f"^f\\.hsic: corrupt metadata \\({needle}"):
                load_metadata(block, "f.hsic")

        assert _peak_of(load) < 16 << 20, needle
    with pytest.raises(HsicompError, match="unsupported metadata version 7"):
        load_metadata(b"\x07", "f.hsic")
    cube = np.zeros((5, 7, 9), np.uint16)
    mask_bomb = {"nodata": {"value": -1, "mask": encode_mask(np.ones(1 << 26, bool))},
                 "dtype": "<i2"}

    def restore_bomb() -> None:
        with pytest.raises(HsicompError, match="nodata mask of the wrong size"):
            restore_samples(cube, mask_bomb, "f.hsic")

    assert _peak_of(restore_bomb) < 8 << 20


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hsicomp", *args], capture_output=True,
                          text=True, env=tool_env(), timeout=300)


def _assert_one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("hsicomp: error: ") and proc.stderr.count("\n") == 1, \
        proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_command_line_errors(valid_files: dict[str, bytes], model_path: Path,
                             tmp_path: Path) -> None:
    """Damaged files and bad inputs through the command line: exit 2, one line, no traceback."""
    model = str(model_path)
    good = tmp_path / "good.hsic"
    good.write_bytes(valid_files["linerwkv-arith"])
    bad = tmp_path / "bad.hsic"
    bad.write_bytes(valid_files["linerwkv-arith"][:-9])
    _assert_one_line_error(_cli("decode", str(bad), str(tmp_path / "o.npy"), "--model", model),
                           f"{bad}: checksum mismatch")
    spliced = tmp_path / "spliced.hsic"
    header, side, _ = unpack(valid_files["linerwkv-arith"])
    spliced.write_bytes(pack(header, side, unpack(valid_files["linerwkv-sample-adaptive"])[2]))
    _assert_one_line_error(_cli("decode", str(spliced), str(tmp_path / "o.npy"), "--model",
                                model), f"{spliced}: corrupt payload")
    foreign = tmp_path / "foreign.hsic"
    foreign.write_bytes(b"GIF89a" + bytes(100))
    _assert_one_line_error(_cli("decode", str(foreign), str(tmp_path / "o.npy")), "bad magic")

    cubes = {
        "float.npy": (np.full((2, 3, 4), 1.5), "non-integer values"),
        "nan.npy": (np.full((2, 3, 4), np.nan), "NaN"),
        "flat.npy": (np.zeros((3, 4), np.uint16), "expected a 3-D cube"),
        "negative.npy": (np.full((2, 3, 4), -1, np.int32), "negative sample values"),
    }
    for name, (array, needle) in cubes.items():
        np.save(tmp_path / name, array)
        _assert_one_line_error(_cli("encode", str(tmp_path / name), str(tmp_path / "x.hsic"),
                                    "--model", model), needle)
    raw = tmp_path / "cube.bsq"
    raw.write_bytes(bytes(2 * 2 * 3 * 4))
    _assert_one_line_error(_cli("encode", str(raw), str(tmp_path / "x.hsic"), "--model", model,
                                "--dims", "2,3,5"), str(raw))
    big = tmp_path / "big.npy"
    np.save(big, np.full((2, 3, 4), 5000, np.uint16))
    _assert_one_line_error(_cli("encode", str(big), str(tmp_path / "x.hsic"), "--model", model,
                                "--bit-depth", "12"), "does not fit in 12 bits")
    assert not (tmp_path / "x.hsic").exists()
