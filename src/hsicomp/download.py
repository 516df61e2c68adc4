"""Resumable, checksum-verified downloads and safe extraction of tar archives."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import lzma
import os
import re
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from hsicomp import __version__
from hsicomp.atomic import atomic_write_text
from hsicomp.errors import HsicompError

USER_AGENT = f"hsicomp/{__version__} (+python-urllib)"
CHUNK = 1 << 20
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")


class _Retryable(Exception):
    """A transient failure: the download is tried again after a pause."""


def md5_file(path: str | os.PathLike) -> str:
    """Return the hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range_start(value: str | None) -> int | None:
    """Return the first byte position of a ``Content-Range: bytes A-B/N`` header."""
    if not value:
        return None
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*$", value)
    return int(m.group(1)) if m else None


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Fetch the rest of ``url`` into ``part``, resuming from its current size.

    Returns when the body is complete (or the server says the range is past the end);
    raises :class:`_Retryable` on transient failures and :class:`HsicompError` otherwise.
    """
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset > 0:
            return  # the part already holds the whole body; the checksum decides
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise HsicompError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError,
            http.client.HTTPException) as exc:
        raise _Retryable(_describe(exc)) from None

    with response:
        status = response.status
        if status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                raise HsicompError(f"{url}: server resumed at byte {start} instead of {offset}")
            mode = "ab"
        elif status == 200:
            mode, offset = "wb", 0  # range not honoured: start again from zero
        else:
            raise HsicompError(f"{url}: unexpected HTTP status {status} for a download")
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else None
        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), file=sys.stderr,
                   disable=not progress, leave=False)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (ConnectionError, TimeoutError, http.client.HTTPException,
                            urllib.error.URLError) as exc:
                        raise _Retryable(_describe(exc)) from None
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    if expected is not None and received < expected:
        raise _Retryable(f"connection closed after {received} of {expected} bytes")


def _describe(exc: BaseException) -> str:
    """Describe a network exception in one line."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def download(url: str, dest: Path, md5: str, *, retries: int = 5, timeout: float = 60.0,
             backoff: float = 1.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; return ``dest``.

    A ``dest`` that already matches ``md5`` is returned without network access. The body is
    written to ``<dest>.part`` and resumed with an HTTP range request after interruptions;
    transient failures are retried ``retries`` times with exponential backoff.
    """
    dest = Path(dest)
    md5 = md5.strip().lower()
    if not _MD5_RE.match(md5):
        raise HsicompError(f"{dest.name}: invalid md5 {md5!r} (expected 32 hex digits)")
    if dest.is_file() and md5_file(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    attempt = 0
    while True:
        try:
            _fetch_once(url, part, timeout, progress)
            break
        except _Retryable as exc:
            attempt += 1
            if attempt > retries:
                raise HsicompError(
                    f"{url}: download failed after {attempt} attempts ({exc}); "
                    f"the partial file {part.name} is kept for resuming"
                ) from None
            time.sleep(backoff * 2 ** (attempt - 1))

    if not part.exists():
        part.touch()  # an empty body
    got = md5_file(part)
    if got != md5:
        part.unlink(missing_ok=True)
        raise HsicompError(
            f"{dest.name}: md5 mismatch (expected {md5}, got {got}); the bad download was removed"
        )
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, dest)
    return dest


def _is_within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _unsafe_reason(member: tarfile.TarInfo, root: Path) -> str | None:
    """Return why ``member`` may not be extracted into ``root``, or None if it is safe."""
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path traversal"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or fifo"
    target = (root / name).resolve()
    if not _is_within(target, root):
        return "outside the destination"
    if member.issym():
        link = Path(member.linkname)
        resolved = (link if link.is_absolute() else (root / name).parent / link).resolve()
        if not _is_within(resolved, root):
            return f"symlink to {member.linkname!r} outside the destination"
    elif member.islnk():
        resolved = (root / member.linkname).resolve()
        if member.linkname.startswith("/") or not _is_within(resolved, root):
            return f"hard link to {member.linkname!r} outside the destination"
    return None


def safe_extract(archive: Path, dest: Path) -> int:
    """Extract a tar (optionally compressed) archive into ``dest``; return the member count.

    Absolute names, ``..`` components, links leading outside ``dest`` and device or fifo
    members are refused with :class:`HsicompError`; members are checked one by one before
    being written, and the standard library's ``"data"`` filter is applied as well.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise HsicompError(f"{archive}: archive not found")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    count = 0

    def checked(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        nonlocal count
        for member in tf:
            reason = _unsafe_reason(member, root)
            if reason:
                raise HsicompError(f"{archive}: unsafe member {member.name!r} ({reason})")
            count += 1
            yield member

    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(root, members=checked(tf), filter="data")
    except tarfile.FilterError as exc:
        name = exc.tarinfo.name if exc.tarinfo is not None else "?"
        raise HsicompError(f"{archive}: unsafe member {name!r} ({exc})") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as exc:
        text = str(exc).replace("\n", " ") or type(exc).__name__
        raise HsicompError(f"{archive}: corrupt or not a tar archive ({text})") from None
    return count


def _cmd_download(args: argparse.Namespace) -> int:
    path = download(args.url, Path(args.out), args.md5, retries=args.retries,
                    timeout=args.timeout, progress=not args.no_progress)
    print(path)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    archive = Path(args.archive)
    stamp = Path(args.stamp)
    stamp.unlink(missing_ok=True)  # a stamp only ever describes a finished extraction
    count = safe_extract(archive, Path(args.dest))
    atomic_write_text(stamp, f"archive: {archive.name}\nmembers: {count}\n")
    print(f"{archive.name}: extracted {count} members into {args.dest}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("extract", help="safely extract a tar archive and write a stamp file",
                       description="Extract ARCHIVE into DIR, refusing unsafe members; write "
                                   "the stamp file once the extraction is complete.")
    p.add_argument("archive", metavar="ARCHIVE", help="tar or tar.gz archive")
    p.add_argument("--dest", required=True, metavar="DIR", help="destination folder")
    p.add_argument("--stamp", required=True, metavar="FILE",
                   help="file written after a complete extraction")
    p.set_defaults(func=_cmd_extract)
