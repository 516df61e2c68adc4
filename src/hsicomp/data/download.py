"""Resumable, checksum-verified, bounded downloads and safe extraction of tar archives."""

from __future__ import annotations

import bz2
import contextlib
import glob
import gzip
import hashlib
import http.client
import lzma
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import deque
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from hsicomp import __version__
from hsicomp.errors import HsicompError

USER_AGENT = f"hsicomp/{__version__} (+python-urllib)"
CHUNK = 1 << 20
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")

# Default bounds (also the workflow's defaults in workflow/schemas/config.schema.yaml). The
# HySpecNet-11k parts are 5.8-6.9 GB each and unpack to about their own size (deflated
# GeoTIFFs): 16 GB per download and 32 GB per extraction leave room for any of them.
DEFAULT_MAX_DOWNLOAD_BYTES = 16_000_000_000
DEFAULT_DEADLINE = 12 * 3600.0  # seconds for one file, retries included
DEFAULT_MIN_RATE = 10_000.0  # bytes/s, averaged over DEFAULT_RATE_WINDOW seconds
DEFAULT_RATE_WINDOW = 60.0
DEFAULT_MAX_EXTRACTED_BYTES = 32_000_000_000
DEFAULT_MAX_MEMBERS = 200_000  # a HySpecNet part holds about 14,000
_HEADER_BUDGET = 1 << 20  # tar stream bytes one member's headers (pax, long names) may take
_COPY_CHUNK = 1 << 15  # extraction copies in cache-sized pieces (faster than 1 MiB)


class _Retryable(Exception):
    """A transient failure: the download is tried again after a pause."""


class _OutOfTime(Exception):
    """The overall deadline of a download has passed."""


def md5_file(path: str | os.PathLike) -> str:
    """Return the hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """Return (first byte, total or None) of a ``Content-Range: bytes A-B/N`` header."""
    if not value:
        return None
    m = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) if m.group(2).isdigit() else None


class _Pace:
    """The overall deadline of a download and its minimum average rate (sliding window)."""

    def __init__(self, deadline: float, min_rate: float, window: float) -> None:
        self.end = time.monotonic() + deadline
        self.min_rate, self.window = min_rate, window
        self.samples: deque[tuple[float, int]] = deque()

    def left(self) -> float:
        """Seconds left before the deadline."""
        return self.end - time.monotonic()

    def restart(self) -> None:
        """Measure the rate afresh (a new connection)."""
        self.samples = deque([(time.monotonic(), 0)])

    def check(self, received: int) -> None:
        """Raise when the deadline has passed or the last window was too slow."""
        now = time.monotonic()
        if now >= self.end:
            raise _OutOfTime
        samples = self.samples
        if now - samples[-1][0] >= self.window / 16:
            samples.append((now, received))
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        since, before = samples[0]
        if now - since >= self.window and received - before < self.min_rate * (now - since):
            raise _Retryable(f"less than {self.min_rate:g} bytes/s over {self.window:g} s")


class _Watchdog:
    """Shuts the connections of one download down once its deadline has passed.

    A socket timeout applies to each ``recv``, so it never fires on a server that trickles
    bytes (status line and headers included); shutting the socket down from a timer thread
    ends any read blocked on it.
    """

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # the socket's own method, even for TLS
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down at the deadline (at once if it has passed)."""
        with self._lock:
            self._sockets = [s for s in self._sockets if s.fileno() >= 0] + [sock]
        if self.expired:
            self._expire()

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener (proxies and redirects as usual) whose connections are watched."""
        watchdog = self

        class Watched(urllib.request.AbstractHTTPHandler):
            def do_open(self, http_class: type[http.client.HTTPConnection],
                        req: urllib.request.Request, **kwargs: object) -> http.client.HTTPResponse:
                class Connection(http_class):
                    def connect(self) -> None:
                        super().connect()
                        watchdog.watch(self.sock)

                return super().do_open(Connection, req, **kwargs)

        return urllib.request.build_opener(
            type("HTTPHandler", (Watched, urllib.request.HTTPHandler), {}),
            type("HTTPSHandler", (Watched, urllib.request.HTTPSHandler), {}))


def _too_long(url: str, part: Path, size: int, max_bytes: int, what: str) -> HsicompError:
    part.unlink(missing_ok=True)
    return HsicompError(f"{url}: {what} {size} bytes, more than the limit of {max_bytes} "
                        f"bytes for this file; the download was stopped and {part.name} removed")


def _fetch_once(url: str, part: Path, timeout: float, progress: bool, max_bytes: int,
                pace: _Pace, watchdog: _Watchdog) -> None:
    """Fetch the rest of ``url`` into ``part``, resuming from its current size.

    Returns when the body is complete (or the server says the range is past the end);
    raises :class:`_Retryable` on transient failures, :class:`_OutOfTime` at the deadline
    and :class:`HsicompError` otherwise. ``part`` never grows past ``max_bytes``.
    """
    from tqdm import tqdm

    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = watchdog.opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset > 0:
            return  # the part already holds the whole body; the checksum decides
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise HsicompError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise _OutOfTime if watchdog.expired else _Retryable(_describe(exc)) from None

    with response:
        status = response.status
        announced = None
        if status == 206:
            start, announced = _content_range(response.headers.get("Content-Range")) or (-1, 0)
            if start != offset:
                part.unlink(missing_ok=True)
                got = "no usable Content-Range" if start < 0 else f"byte {start}"
                raise _Retryable(f"server resumed at {got} instead of byte {offset}, so "
                                 f"{part.name} was removed to start again from byte 0")
            mode = "ab"
        elif status == 200:
            mode, offset = "wb", 0  # range not honoured: start again from zero
        else:
            raise HsicompError(f"{url}: unexpected HTTP status {status} for a download")
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = offset + expected if expected is not None else announced
        if total is not None and total > max_bytes:
            raise _too_long(url, part, total, max_bytes, "the server announces")
        received = 0
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), file=sys.stderr,
                   disable=not progress, leave=False)
        pace.restart()
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read1(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        if watchdog.expired:
                            raise _OutOfTime from None
                        raise _Retryable(_describe(exc)) from None
                    if not chunk:
                        if watchdog.expired:  # the shutdown looks like the end of the body
                            raise _OutOfTime
                        break
                    if offset + received + len(chunk) > max_bytes:
                        f.close()
                        raise _too_long(url, part, offset + received + len(chunk), max_bytes,
                                        "received at least")
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    pace.check(received)
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


def _part_note(part: Path) -> str:
    """Say what is left of a partial download (an empty part is removed)."""
    size = part.stat().st_size if part.exists() else 0
    if size:
        return f"the partial file {part.name} ({size} bytes) is kept for resuming"
    part.unlink(missing_ok=True)
    return "no partial file was kept"


def download(url: str, dest: Path, md5: str, *, retries: int = 5, timeout: float = 60.0,
             backoff: float = 1.0, progress: bool = True,
             max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES, deadline: float = DEFAULT_DEADLINE,
             min_rate: float = DEFAULT_MIN_RATE,
             rate_window: float = DEFAULT_RATE_WINDOW) -> Path:
    """Download ``url`` to ``dest`` and verify its MD5; return ``dest``.

    A ``dest`` that already matches ``md5`` is returned without network access. The body is
    written to ``<dest>.part`` and resumed with an HTTP range request after interruptions;
    transient failures are retried ``retries`` times with exponential backoff. A body longer
    than ``max_bytes`` is stopped and its part removed; a connection averaging less than
    ``min_rate`` bytes/s over ``rate_window`` seconds is dropped (a transient failure); the
    whole call, retries included, is stopped once ``deadline`` seconds have passed (setting
    up a connection, bounded by ``timeout``, may add to that).
    """
    dest = Path(dest)
    md5 = md5.strip().lower()
    if not _MD5_RE.match(md5):
        raise HsicompError(f"{dest.name}: invalid md5 {md5!r} (expected 32 hex digits)")
    if max_bytes < 0 or deadline <= 0 or min_rate < 0 or rate_window <= 0:
        raise HsicompError(f"{dest.name}: invalid download limits (max_bytes {max_bytes}, "
                           f"deadline {deadline}, min_rate {min_rate}, rate_window "
                           f"{rate_window}); each must be positive, min_rate may be 0")
    if dest.is_file() and md5_file(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    pace = _Pace(deadline, min_rate, rate_window)
    attempt = 0
    while True:
        try:
            with _Watchdog(pace.left()) as watchdog:
                _fetch_once(url, part, timeout, progress, max_bytes, pace, watchdog)
            break
        except _Retryable as exc:
            attempt += 1
            pause = backoff * 2 ** (attempt - 1)
            if attempt > retries or pause >= pace.left():
                why = "" if attempt > retries else f" and the {deadline:g} s deadline is near"
                raise HsicompError(
                    f"{url}: download failed after {attempt} attempts{why} ({exc}); "
                    f"{_part_note(part)}"
                ) from None
            time.sleep(pause)
        except _OutOfTime:
            raise HsicompError(
                f"{url}: download not finished within the {deadline:g} s deadline; "
                f"{_part_note(part)}"
            ) from None

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


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Return why ``member`` may not be extracted, or None if it is a plain file or folder."""
    if member.issym():
        return f"symlink to {member.linkname!r}; links are never extracted"
    if member.islnk():
        return f"hard link to {member.linkname!r}; links are never extracted"
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or fifo"
    if not (member.isreg() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    name = member.name
    if "\x00" in name:
        return "NUL in name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "path traversal"
    if member.isreg() and not parts:
        return "empty name"
    return None


class _StreamBudget(Exception):
    """The tar stream runs past what the members read so far allow."""


class _MeteredReader:
    """A read-only stream for :mod:`tarfile` that refuses to read past an allowance."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.pos = 0
        self._limit = 0

    def allow(self, n: int) -> None:
        """Allow ``n`` more bytes from the current position."""
        self._limit = self.pos + n

    def read(self, n: int = -1) -> bytes:
        room = self._limit - self.pos + 1
        try:
            data = self._raw.read(room if n < 0 else min(n, room))
        except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise tarfile.ReadError(str(exc) or type(exc).__name__) from None
        self.pos += len(data)
        if self.pos > self._limit:
            raise _StreamBudget
        return data


def _open_decompressed(path: Path) -> BinaryIO:
    """Open a plain, gzip, bzip2 or xz file for reading its decompressed bytes."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def _extract_members(archive: Path, staging: Path, max_bytes: int, max_members: int) -> int:
    """Stream the members of ``archive`` into the empty folder ``staging``; return the count.

    Only folders and regular files are written (links are never created, so no path under
    ``staging`` can lead elsewhere); the bytes written, the member count and the tar headers
    are counted as they stream and stopped at their caps.
    """
    try:
        with _open_decompressed(archive) as raw:
            return _stream_members(archive, raw, staging, max_bytes, max_members)
    except _StreamBudget:
        raise HsicompError(f"{archive}: the tar headers of a member take more than "
                           f"{_HEADER_BUDGET} bytes; nothing was extracted") from None
    except tarfile.FilterError as exc:
        name = exc.tarinfo.name if exc.tarinfo is not None else "?"
        raise HsicompError(f"{archive}: unsafe member {name!r} ({exc})") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        text = str(exc).replace("\n", " ") or type(exc).__name__
        raise HsicompError(f"{archive}: corrupt or not a tar archive ({text})") from None


def _stream_members(archive: Path, raw: BinaryIO, staging: Path, max_bytes: int,
                    max_members: int) -> int:
    count = total = 0
    reader = _MeteredReader(raw)
    reader.allow(_HEADER_BUDGET)
    with tarfile.open(fileobj=reader, mode="r|") as tf:
        for member in tf:
            count += 1
            if count > max_members:
                raise HsicompError(f"{archive}: more than {max_members} members (the member "
                                   "limit); nothing was extracted")
            reason = _refusal(member)
            if reason:
                raise HsicompError(f"{archive}: unsafe member {member.name!r} ({reason})")
            tarfile.data_filter(member, str(staging))  # a second opinion
            target = staging.joinpath(*PurePosixPath(member.name).parts)
            size = member.size if member.isreg() else 0
            if size > max_bytes - total:
                raise _over_cap(archive, member.name, max_bytes)
            reader.allow(size + _HEADER_BUDGET)  # this member's data and the next headers
            try:
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                with os.fdopen(os.open(target, flags, 0o666), "wb") as out, \
                        tf.extractfile(member) as data:
                    while chunk := data.read(_COPY_CHUNK):
                        total += len(chunk)  # counted as written, not taken from the header
                        if total > max_bytes:
                            raise _over_cap(archive, member.name, max_bytes)
                        out.write(chunk)
            except OSError as exc:
                raise HsicompError(f"{archive}: cannot extract member {member.name!r} "
                                   f"({exc.strerror or exc})") from None
    return count


def _over_cap(archive: Path, name: str, max_bytes: int) -> HsicompError:
    return HsicompError(f"{archive}: member {name!r} takes the extracted size past the limit "
                        f"of {max_bytes} bytes; nothing was extracted")


def _check_tree(archive: Path, staging: Path) -> None:
    """Check with strict ``realpath`` that every path under ``staging`` stays inside it."""
    real = os.path.realpath(staging, strict=True)
    for folder, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = os.path.join(folder, name)
            try:
                mode = os.lstat(path).st_mode
                inside = os.path.commonpath([os.path.realpath(path, strict=True), real]) == real
            except OSError:
                inside = False
            if not inside or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                rel = os.path.relpath(path, staging)
                raise HsicompError(f"{archive}: {rel!r} is not a plain file or folder inside "
                                   "the destination; nothing was extracted")


def _move_into_place(archive: Path, staging: Path, root: Path) -> None:
    """Move the tree under ``staging`` into ``root``, merging with folders already there.

    Every move is planned (and every conflict refused) before the first one is made; existing
    files are replaced by rename, so a link already in ``root`` is never written through.
    """
    real_root = os.path.realpath(root, strict=True)
    moves: list[tuple[str, str]] = []

    def plan(src_dir: str, dst_dir: str) -> None:
        real = os.path.realpath(dst_dir, strict=True)
        if os.path.commonpath([real, real_root]) != real_root:
            raise HsicompError(f"{archive}: {dst_dir} leads outside {root}; nothing was moved")
        for entry in sorted(os.scandir(src_dir), key=lambda e: e.name):
            dst = os.path.join(dst_dir, entry.name)
            try:
                existing = os.lstat(dst).st_mode
            except FileNotFoundError:
                moves.append((entry.path, dst))
                continue
            if entry.is_dir(follow_symlinks=False) and stat.S_ISDIR(existing):
                plan(entry.path, dst)
            elif entry.is_file(follow_symlinks=False) and stat.S_ISREG(existing):
                moves.append((entry.path, dst))
            else:
                raise HsicompError(f"{archive}: {os.path.relpath(dst, root)!r} already exists "
                                   f"in {root} as another kind of entry; nothing was moved")

    plan(str(staging), str(root))
    for src, dst in moves:
        os.replace(src, dst)


def safe_extract(archive: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_EXTRACTED_BYTES,
                 max_members: int = DEFAULT_MAX_MEMBERS) -> int:
    """Extract a tar (optionally compressed) archive into ``dest``; return the member count.

    Only folders and regular files are extracted: links, devices, fifos, absolute names and
    ``..`` components are refused with :class:`HsicompError`, as is an archive holding more
    than ``max_members`` members or unpacking to more than ``max_bytes``. Members go to a
    fresh temporary folder inside ``dest``, which is checked with strict ``realpath`` and
    moved into place only when every member is in; a failure leaves ``dest`` as it was.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise HsicompError(f"{archive}: archive not found")
    if max_bytes < 0 or max_members < 1:
        raise HsicompError(f"{archive}: invalid extraction limits (max_bytes {max_bytes}, "
                           f"max_members {max_members})")
    dest = Path(dest)
    created = not os.path.lexists(dest)
    prefix = f".{archive.name}."
    done = False
    try:
        dest.mkdir(parents=True, exist_ok=True)
        root = Path(os.path.realpath(dest, strict=True))
        for stale in glob.glob(glob.escape(str(root / prefix)) + "*.extracting"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed extraction
        staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=".extracting", dir=root))
        try:
            count = _extract_members(archive, staging, max_bytes, max_members)
            _check_tree(archive, staging)
            _move_into_place(archive, staging, root)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        raise HsicompError(f"{archive}: cannot extract into {dest} ({exc})") from None
    finally:
        if created and not done:
            with contextlib.suppress(OSError):
                dest.rmdir()  # made by this call and left empty by the failure
    return count
