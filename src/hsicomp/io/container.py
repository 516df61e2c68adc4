"""The .hsic container: one self-describing file per compressed cube.

Layout (all integers little-endian, ``varint`` = unsigned LEB128)::

    magic      4 bytes  b"HSIC"
    version    u8       FORMAT_VERSION
    codec      u8 length + ASCII name of the codec that wrote the payload
    sample     u8       sample type code (0 = unsigned 16-bit integer)
    bit_depth  u8       declared bit depth of the samples (1..16)
    bands      u16
    rows       u32
    cols       u32
    delta      u32      maximum absolute error the codec guarantees (0 = lossless)
    flags      u16      bit 15 (FLAG_LOSSY): lossy codec, no maximum-error guarantee (delta
                        is then 0); bits 0..14 codec-defined
    band list  u16 number of runs, then per run: u16 first band, u16 run length
               (original 0-based band indices; 0 runs = bands 0..bands-1)
    metadata   (version 3 only) varint length (1..MAX_METADATA_BYTES) + bytes: what the
               input file said about the cube besides its samples (see hsicomp.io.metadata)
    side info  varint length + bytes (codec-defined: parameters, statistics, model hash)
    payload    varint length + bytes (codec-defined entropy-coded data)
    check      u32 (version 2) CRC-32 of every byte from magic to the end of the side info,
               followed by the decoded data (see :func:`check_value`); (version 3) the
               version-2 check of the same file without its metadata field, continued
               over that field (length and bytes)
    crc32      u32 over every byte before it

The crc32 catches damage to the file; the check catches a file that is intact but decodes to
something else than the encoder produced (a forged or mis-written file whose crc32 was made to
match). What "the decoded data" is depends on the codec (``Codec.check_covers``): the decoded
samples for codecs whose decoder is exact on every machine, the entropy-decoded integers a
floating-point synthesis consumes for the lossy learned codecs. Version 1 files (no check)
still decode.

A file without metadata is written as version 2, byte for byte what earlier releases wrote;
a file with metadata is version 3. Because the version-3 check continues the version-2 one,
:func:`add_metadata` adds a metadata block to a coded file without decoding it.

The rate of a cube is the size of this whole file.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from hsicomp.errors import HsicompError

MAGIC = b"HSIC"
#: Version of files without a metadata block.
FORMAT_VERSION = 2
#: Version of files with a metadata block.
METADATA_FORMAT_VERSION = 3
#: Versions this hsicomp reads (version 1 has no check field).
READABLE_VERSIONS = (1, 2, 3)
#: Largest metadata block a file may carry (1 MiB).
MAX_METADATA_BYTES = 1 << 20
SAMPLE_UINT16 = 0
MAX_VARINT_BYTES = 10
#: Header flag of a lossy codec: the file guarantees no maximum error (its delta is 0).
FLAG_LOSSY = 0x8000
_FIXED = struct.Struct("<BBHIIIH")  # sample, bit_depth, bands, rows, cols, delta, flags


@dataclass
class Header:
    """What every .hsic file says about the cube it holds."""

    codec: str
    bands: int
    rows: int
    cols: int
    bit_depth: int
    delta: int = 0
    flags: int = 0
    band_list: list[int] | None = field(default=None)
    #: The metadata block (empty: none; see :mod:`hsicomp.io.metadata`).
    metadata: bytes = b""
    #: The file's check value (None for a version-1 file, or before packing).
    check: int | None = field(default=None, compare=False)
    #: CRC-32 of the file's bytes from magic to the end of the side info, as version 2 has
    #: them (version byte 2, no metadata field; set by unpack).
    check_seed: int = field(default=0, compare=False, repr=False)
    version: int = field(default=FORMAT_VERSION, compare=False)

    @property
    def lossy(self) -> bool:
        """Whether the file is lossy (no maximum-error guarantee, see FLAG_LOSSY)."""
        return bool(self.flags & FLAG_LOSSY)

    @property
    def samples(self) -> int:
        return self.bands * self.rows * self.cols

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.bands, self.rows, self.cols)


def encode_varints(values: Iterable[int]) -> bytes:
    """Unsigned LEB128 encoding of a sequence of non-negative integers."""
    out = bytearray()
    for value in values:
        while value > 0x7F:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out)


def decode_varints(data: bytes, count: int, source: str, what: str = "band segment lengths"
                   ) -> list[int]:
    """Read exactly ``count`` varints (``what``) filling ``data``; HsicompError otherwise."""
    values: list[int] = []
    value = shift = 0
    for byte in data:
        if shift > 63:
            raise HsicompError(f"{source}: corrupt side info (varint too long)")
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    if shift or len(values) != count:
        raise HsicompError(f"{source}: corrupt side info (expected {count} {what}, "
                           f"found {len(values)})")
    return values


def read_varints(data: bytes, pos: int, count: int, source: str) -> tuple[list[int], int]:
    """``count`` varints of ``data`` from ``pos``, and the position after them (data may
    follow); HsicompError when the data ends first."""
    values: list[int] = []
    value = shift = 0
    while len(values) < count:
        if pos >= len(data) or shift > 63:
            raise HsicompError(f"{source}: corrupt side info (truncated integers)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    return values, pos


def _varint(value: int) -> bytes:
    return encode_varints([value])


def _band_runs(band_list: list[int] | None, bands: int) -> list[tuple[int, int]]:
    if band_list is None or list(band_list) == list(range(bands)):
        return []
    if len(band_list) != bands:
        raise ValueError(f"band list has {len(band_list)} entries for {bands} bands")
    runs: list[list[int]] = []
    for b in band_list:
        if runs and b == runs[-1][0] + runs[-1][1]:
            runs[-1][1] += 1
        else:
            runs.append([b, 1])
    return [(s, n) for s, n in runs]


def canonical_bytes(part: np.ndarray | bytes) -> bytes:
    """The bytes a decoded array (or raw bytes) contributes to a check value: uint16 samples
    as little-endian uint16, any other integer array as little-endian int64, C order."""
    if isinstance(part, bytes | bytearray | memoryview):
        return bytes(part)
    array = np.asarray(part)
    if array.dtype.kind not in "iub":
        raise TypeError(f"check values cover integer data, not {array.dtype}")
    dtype = "<u2" if array.dtype == np.uint16 else "<i8"
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def check_value(seed: int, decoded: Iterable[np.ndarray | bytes]) -> int:
    """CRC-32 continuing ``seed`` over the canonical bytes of every decoded part."""
    crc = seed
    for part in decoded:
        crc = zlib.crc32(canonical_bytes(part), crc)
    return crc


def _metadata_field(metadata: bytes) -> bytes:
    return _varint(len(metadata)) + metadata if metadata else b""


def file_check(header: Header, decoded: Iterable[np.ndarray | bytes]) -> int:
    """The check value a file with ``header`` must carry when it decodes to ``decoded``."""
    return zlib.crc32(_metadata_field(header.metadata),
                      check_value(header.check_seed, decoded))


def pack(header: Header, side_info: bytes, payload: bytes,
         decoded: Iterable[np.ndarray | bytes] | None = None) -> bytes:
    """Serialise a header, side information and payload into .hsic bytes.

    The check value is computed from ``decoded`` (what the decoder must reproduce, see the
    module doc) when it is given, else taken from ``header.check``. A header with metadata
    gives a version-3 file, any other a version-2 file.
    """
    name = header.codec.encode("ascii")
    if not 0 < len(name) < 256:
        raise ValueError("codec name must be 1..255 ASCII characters")
    if not 1 <= header.bit_depth <= 16:
        raise ValueError(f"bit depth {header.bit_depth} not in 1..16")
    runs = _band_runs(header.band_list, header.bands)
    if not 0 <= header.delta <= 0xFFFFFFFF:
        raise ValueError(f"delta {header.delta} does not fit in the header")
    if len(header.metadata) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata block of {len(header.metadata)} bytes (at most "
                         f"{MAX_METADATA_BYTES})")
    head = b"".join([
        name,
        _FIXED.pack(SAMPLE_UINT16, header.bit_depth, header.bands, header.rows, header.cols,
                    header.delta, header.flags),
        struct.pack("<H", len(runs)),
        b"".join(struct.pack("<HH", s, n) for s, n in runs),
    ])
    side = _varint(len(side_info)) + side_info
    seed = zlib.crc32(b"".join([MAGIC, bytes([FORMAT_VERSION, len(name)]), head, side]))
    metadata = _metadata_field(header.metadata)
    if decoded is not None:
        check = zlib.crc32(metadata, check_value(seed, decoded))
    elif header.check is not None:
        check = header.check
    else:
        raise ValueError("pack needs the decoded data (or a header check value)")
    version = METADATA_FORMAT_VERSION if metadata else FORMAT_VERSION
    body = b"".join([MAGIC, bytes([version, len(name)]), head, metadata, side,
                     _varint(len(payload)), payload, struct.pack("<I", check)])
    return body + struct.pack("<I", zlib.crc32(body))


def add_metadata(data: bytes, metadata: bytes, source: str = "input") -> bytes:
    """A version-2 file's bytes with a metadata block added (the same bytes for an empty
    block); the check value is carried over, so nothing is decoded."""
    header, side_info, payload = unpack(data, source)
    if not metadata:
        return data
    if header.version != FORMAT_VERSION:
        raise HsicompError(f"{source}: metadata goes into version-{FORMAT_VERSION} files, "
                           f"not version {header.version}")
    if len(metadata) > MAX_METADATA_BYTES:
        raise HsicompError(f"{source}: metadata of {len(metadata)} bytes is too large (at "
                           f"most {MAX_METADATA_BYTES})")
    header.check = zlib.crc32(_metadata_field(metadata), header.check or 0)
    header.metadata = metadata
    return pack(header, side_info, payload)


class _Reader:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise HsicompError(f"{self.source}: truncated file (while reading {what})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value
        raise HsicompError(f"{self.source}: corrupt length field ({what})")


def unpack(data: bytes, source: str = "input") -> tuple[Header, bytes, bytes]:
    """Parse and check .hsic bytes; return (header, side_info, payload).

    Raises :class:`HsicompError` naming ``source`` for foreign, truncated or corrupt data.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise HsicompError(f"{source}: not an hsicomp file (bad magic)")
    if len(data) < len(MAGIC) + 5:
        raise HsicompError(f"{source}: truncated file (header)")
    body, crc = data[:-4], struct.unpack("<I", data[-4:])[0]
    if zlib.crc32(body) != crc:
        raise HsicompError(f"{source}: checksum mismatch (file is corrupt or truncated)")
    r = _Reader(body, source)
    r.take(len(MAGIC), "magic")
    version = r.take(1, "version")[0]
    if version not in READABLE_VERSIONS:
        raise HsicompError(f"{source}: unsupported format version {version} (this hsicomp "
                           f"reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    name_len = r.take(1, "codec name")[0]
    try:
        codec = r.take(name_len, "codec name").decode("ascii")
    except UnicodeDecodeError:
        raise HsicompError(f"{source}: corrupt codec name") from None
    sample, bit_depth, bands, rows, cols, delta, flags = _FIXED.unpack(
        r.take(_FIXED.size, "dimensions"))
    if sample != SAMPLE_UINT16:
        raise HsicompError(f"{source}: unsupported sample type code {sample}")
    if not 1 <= bit_depth <= 16 or 0 in (bands, rows, cols):
        raise HsicompError(f"{source}: corrupt header (bit depth {bit_depth}, "
                           f"dims {bands}x{rows}x{cols})")
    if flags & FLAG_LOSSY and delta:
        raise HsicompError(f"{source}: corrupt header (lossy file with delta {delta})")
    (n_runs,) = struct.unpack("<H", r.take(2, "band list"))
    band_list: list[int] | None = None
    if n_runs:
        runs = [struct.unpack("<HH", r.take(4, "band list")) for _ in range(n_runs)]
        total = sum(count for _, count in runs)  # before building the list: runs may be huge
        if total != bands:
            raise HsicompError(f"{source}: band list has {total} bands, header says {bands}")
        band_list = [b for start, count in runs for b in range(start, start + count)]
    head_end = r.pos
    metadata = b""
    if version >= METADATA_FORMAT_VERSION:
        size = r.varint("metadata length")
        if not 0 < size <= MAX_METADATA_BYTES:
            raise HsicompError(f"{source}: corrupt header (metadata block of {size} bytes, "
                               f"expected 1..{MAX_METADATA_BYTES})")
        metadata = r.take(size, "metadata")
    side_start = r.pos
    side_info = r.take(r.varint("side info length"), "side info")
    # The seed is that of the version-2 file: version byte 2, no metadata field.
    seed = zlib.crc32(body[side_start:r.pos], zlib.crc32(
        body[5:head_end], zlib.crc32(MAGIC + bytes([FORMAT_VERSION]))))
    payload = r.take(r.varint("payload length"), "payload")
    check = struct.unpack("<I", r.take(4, "check value"))[0] if version >= 2 else None
    if r.pos != len(body):
        raise HsicompError(f"{source}: {len(body) - r.pos} unexpected trailing bytes")
    header = Header(codec=codec, bands=bands, rows=rows, cols=cols, bit_depth=bit_depth,
                    delta=delta, flags=flags, band_list=band_list, metadata=metadata,
                    check=check, check_seed=seed, version=version)
    return header, side_info, payload
