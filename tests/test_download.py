"""Tests for resumable downloads and safe archive extraction (local HTTP server only)."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO
from hyspecnet_fixture import build_hyspecnet_archives, build_hyspecnet_tree

from hsicomp.cli import data as data_cli
from hsicomp.cli import main
from hsicomp.data import download as dl
from hsicomp.errors import HsicompError


@pytest.fixture
def payload(server) -> tuple[str, bytes, str]:
    data = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (server.root / "blob.bin").write_bytes(data)
    return "blob.bin", data, hashlib.md5(data).hexdigest()


def _get(server, name, dest, md5, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("backoff", 0.0)
    kw.setdefault("timeout", 5.0)
    return dl.download(server.url(name), dest, md5, **kw)


def test_md5_file(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    assert dl.md5_file(f) == "900150983cd24fb0d6963f7d28e17f72"


def test_download_ok(server, payload, tmp_path):
    name, data, md5 = payload
    dest = tmp_path / "out" / "blob.bin"
    assert _get(server, name, dest, md5) == dest
    assert dest.read_bytes() == data
    assert not dest.with_name("blob.bin.part").exists()
    assert server.requests == [("/blob.bin", None)]


def test_md5_mismatch_removes_everything(server, payload, tmp_path):
    name, _, md5 = payload
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, "0" * 32)
    msg = str(info.value)
    assert msg == (f"blob.bin: md5 mismatch (expected {'0' * 32}, got {md5}); "
                   "the bad download was removed")
    assert not dest.exists()
    assert not dest.with_name("blob.bin.part").exists()


def test_interrupted_download_resumes(server, payload, tmp_path):
    name, data, md5 = payload
    server.cut_after = 100_000
    dest = tmp_path / "blob.bin"
    _get(server, name, dest, md5)
    assert dest.read_bytes() == data
    assert len(server.requests) == 2
    assert server.requests[0] == ("/blob.bin", None)
    resumed_from = int(server.requests[1][1].removeprefix("bytes=").rstrip("-"))
    assert server.requests[1][1] == f"bytes={resumed_from}-"
    assert 0 < resumed_from <= 100_000


def test_server_ignoring_range_restarts(server, payload, tmp_path):
    name, data, md5 = payload
    server.cut_after = 50_000
    server.ignore_range = True
    dest = tmp_path / "blob.bin"
    _get(server, name, dest, md5)
    assert dest.read_bytes() == data
    assert len(server.requests) == 2
    assert server.requests[1][1].startswith("bytes=")


def test_complete_part_gets_416_and_is_verified(server, payload, tmp_path):
    name, data, md5 = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)
    _get(server, name, dest, md5)
    assert dest.read_bytes() == data
    assert server.requests == [("/blob.bin", f"bytes={len(data)}-")]


def test_existing_file_needs_no_request(server, payload, tmp_path):
    name, data, md5 = payload
    dest = tmp_path / "blob.bin"
    dest.write_bytes(data)
    assert _get(server, name, dest, md5) == dest
    assert server.requests == []


def test_server_error_is_retried(server, payload, tmp_path):
    name, data, md5 = payload
    server.fail_first_status = 503
    dest = tmp_path / "blob.bin"
    _get(server, name, dest, md5)
    assert dest.read_bytes() == data
    assert len(server.requests) == 2


def test_404_fails_at_once(server, tmp_path):
    dest = tmp_path / "missing.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, "missing.bin", dest, "0" * 32, retries=5)
    msg = str(info.value)
    assert "\n" not in msg
    assert server.url("missing.bin") in msg and "404" in msg
    assert len(server.requests) == 1
    assert not dest.exists()


def test_retries_exhausted_keeps_part(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "x.bin"
    with pytest.raises(HsicompError, match=r"download failed after 3 attempts"):
        dl.download(f"http://127.0.0.1:{port}/x.bin", dest, "0" * 32, retries=2,
                    backoff=0.0, timeout=2.0, progress=False)
    assert not dest.exists()


def test_invalid_md5_argument(tmp_path):
    with pytest.raises(HsicompError, match="invalid md5"):
        dl.download("http://127.0.0.1:9/x", tmp_path / "x", "xyz", progress=False)


# --- bounded downloads ----------------------------------------------------------------------

def _answer(handler, body, *, status=200, length=None, pause=0.0, headers=()):
    """Send ``body`` (an iterable of byte strings), pausing between pieces; always True."""
    handler.send_response(status)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    for key, value in headers:
        handler.send_header(key, value)
    handler.end_headers()
    handler.close_connection = True
    try:
        for piece in body:
            handler.wfile.write(piece)
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up, as it should
    return True


def _cut_then(data, later):
    """A script: the first request gets the first 100,000 bytes of a 200; the others, later."""
    def script(handler):
        if len(handler.server.requests) == 1:
            return _answer(handler, [data[:100_000]], length=len(data))
        return later(handler)
    return script


def test_server_errors_message_says_no_part_is_kept(server, payload, tmp_path):
    name, _, md5 = payload
    server.script = lambda handler: handler.send_error(503) or True
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, retries=1)
    msg = str(info.value)
    assert msg == (f"{server.url(name)}: download failed after 2 attempts (HTTP 503 Service "
                   "Unavailable); no partial file was kept")
    assert not dest.with_name("blob.bin.part").exists()


def test_server_errors_after_a_partial_body_keep_the_part(server, payload, tmp_path):
    name, data, md5 = payload
    server.script = _cut_then(data, lambda handler: handler.send_error(503) or True)
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, retries=1)
    part = dest.with_name("blob.bin.part")
    assert str(info.value).endswith(
        f"(HTTP 503 Service Unavailable); the partial file blob.bin.part "
        f"({part.stat().st_size} bytes) is kept for resuming")
    assert part.read_bytes() == data[:part.stat().st_size]


def _wrong_resume(data, cut_first=True):
    """A script: range requests get a 206 that starts at byte 0; others get the whole body."""
    def script(handler):
        if handler.headers.get("Range"):
            return _answer(handler, [data], status=206, length=len(data),
                           headers=[("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")])
        return _answer(handler, [data], length=len(data))
    return _cut_then(data, script) if cut_first else script


def test_wrong_resume_start_removes_the_part_so_a_rerun_succeeds(server, payload, tmp_path):
    name, data, md5 = payload
    server.script = _wrong_resume(data)
    dest = tmp_path / "blob.bin"
    part = dest.with_name("blob.bin.part")
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, retries=1)
    assert str(info.value) == (
        f"{server.url(name)}: download failed after 2 attempts (server resumed at byte 0 "
        "instead of byte 100000, so blob.bin.part was removed to start again from byte 0); "
        "no partial file was kept")
    assert not part.exists()
    for script in (_wrong_resume(data, cut_first=False), None):  # then a good server
        server.requests.clear()
        server.script = script
        assert _get(server, name, dest, md5, retries=0) == dest
        assert dest.read_bytes() == data
        assert server.requests == [("/blob.bin", None)]
        dest.unlink()


def test_wrong_resume_start_recovers_within_the_retries(server, payload, tmp_path):
    name, data, md5 = payload
    server.script = _wrong_resume(data)
    dest = tmp_path / "blob.bin"
    _get(server, name, dest, md5, retries=2)
    assert dest.read_bytes() == data
    assert server.requests == [("/blob.bin", None), ("/blob.bin", "bytes=100000-"),
                               ("/blob.bin", None)]


@pytest.mark.parametrize("announced", [False, True])
def test_body_longer_than_max_bytes_is_stopped_and_removed(server, payload, tmp_path,
                                                          announced):
    name, _, md5 = payload
    piece, pieces = b"\0" * 65536, 128  # 8 MiB, with or without a Content-Length
    server.script = lambda handler: _answer(handler, [piece] * pieces,
                                            length=len(piece) * pieces if announced else None)
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, max_bytes=200_000)
    msg = str(info.value)
    what = "the server announces 8388608" if announced else r"received at least \d+"
    assert re.fullmatch(f"{re.escape(server.url(name))}: {what} bytes, more than the limit of "
                        "200000 bytes for this file; the download was stopped and "
                        r"blob.bin.part removed", msg)
    assert len(server.requests) == 1
    assert sorted(os.listdir(tmp_path)) == ["served"]


def test_slow_server_is_dropped(server, payload, tmp_path):
    name, data, md5 = payload
    # a byte every 50 ms (20 bytes/s) for 600 bytes: 30 s when nothing stops it
    server.script = lambda handler: _answer(handler, [bytes([b]) for b in data[:600]],
                                            length=600, pause=0.05)
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, retries=1, min_rate=100, rate_window=0.3)
    msg = str(info.value)
    assert msg.startswith(f"{server.url(name)}: download failed after 2 attempts (less than "
                          "100 bytes/s over 0.3 s); the partial file blob.bin.part (")
    assert len(server.requests) == 2
    assert not dest.exists()


def test_deadline_stops_a_steady_endless_body(server, payload, tmp_path):
    name, data, md5 = payload
    # 1 KiB every 20 ms (50 KiB/s, fast enough for the rate) for 30 s, no Content-Length
    server.script = lambda handler: _answer(handler, [b"x" * 1024] * 1500, pause=0.02)
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, deadline=0.5, min_rate=1, rate_window=0.2)
    msg = str(info.value)
    part = dest.with_name("blob.bin.part")
    assert msg == (f"{server.url(name)}: download not finished within the 0.5 s deadline; "
                   f"the partial file blob.bin.part ({part.stat().st_size} bytes) is kept "
                   "for resuming")
    assert part.stat().st_size > 0
    assert not dest.exists()


def test_deadline_stops_a_server_trickling_its_headers(server, payload, tmp_path):
    name, _, md5 = payload

    def trickle(handler):  # a byte every 50 ms of an endless header: 30 s for 600 bytes
        try:
            for byte in b"HTTP/1.0 200 OK\r\nX-Pad: " + b"a" * 600:
                handler.wfile.write(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return True

    server.script = trickle
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError) as info:
        _get(server, name, dest, md5, deadline=0.5)
    assert str(info.value) == (f"{server.url(name)}: download not finished within the 0.5 s "
                               "deadline; no partial file was kept")
    assert len(server.requests) == 1
    assert sorted(os.listdir(tmp_path)) == ["served"]


def test_deadline_ends_the_retries(server, payload, tmp_path):
    name, _, md5 = payload
    server.script = lambda handler: handler.send_error(503) or True
    dest = tmp_path / "blob.bin"
    with pytest.raises(HsicompError, match=r"and the 0.5 s deadline is near \(HTTP 503"):
        _get(server, name, dest, md5, retries=30, backoff=0.1, deadline=0.5)
    assert 1 <= len(server.requests) <= 4  # pauses of 0.1, 0.2, 0.4 s fit in 0.5 s at most


def test_download_limit_defaults_match_the_workflow_schema():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["$defs"]["hyspecnet"]["properties"]
    assert props["max_archive_bytes"]["default"] == dl.DEFAULT_MAX_DOWNLOAD_BYTES
    assert props["download_deadline"]["default"] == dl.DEFAULT_DEADLINE
    assert props["download_min_rate"]["default"] == dl.DEFAULT_MIN_RATE
    assert props["download_rate_window"]["default"] == dl.DEFAULT_RATE_WINDOW
    assert props["max_extracted_bytes"]["default"] == dl.DEFAULT_MAX_EXTRACTED_BYTES


def test_invalid_download_limits(tmp_path):
    with pytest.raises(HsicompError, match="invalid download limits"):
        dl.download("http://127.0.0.1:9/x", tmp_path / "x", "0" * 32, deadline=0)


# --- safe extraction ---------------------------------------------------------------------

def _tar_with(path: Path, *members: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> Path:
    """Write a tar (gzipped for a .gz name); a file member without data holds b"x" * size."""
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tf:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, b"x" * member.size)
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("../evil"), "path traversal"),
        (_file("a/../../evil"), "path traversal"),
        (_file("/tmp/evil-abs"), "absolute path"),
        (_link("passwd", "/etc/passwd"), "symlink"),
        (_link("up", "../../etc"), "symlink"),
        (_link("hard", "/etc/passwd", tarfile.LNKTYPE), "hard link"),
        (_link("fifo", "", tarfile.FIFOTYPE), "device or fifo"),
        (_link("dev", "", tarfile.CHRTYPE), "device or fifo"),
    ],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, member, reason):
    archive = _tar_with(tmp_path / "bad.tar.gz", _file("ok.txt"), member)
    dest = tmp_path / "dest"
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest)
    msg = str(info.value)
    assert msg.startswith(f"{archive}: unsafe member {member.name!r} (")
    assert reason in msg
    assert not (tmp_path / "evil").exists()
    assert not Path("/tmp/evil-abs").exists()
    assert not (dest / member.name.lstrip("/")).exists()
    assert not os.path.lexists(dest / "passwd")


@pytest.mark.parametrize("link", [_link("d/b.txt", "a.txt"),
                                  _link("d/c.txt", "d/a.txt", tarfile.LNKTYPE)])
def test_safe_extract_refuses_internal_links_too(tmp_path, link):
    archive = _tar_with(tmp_path / "ok.tar", _file("d/a.txt"), link)
    dest = tmp_path / "dest"
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest)
    assert str(info.value).startswith(f"{archive}: unsafe member {link.name!r} (")
    assert "links are never extracted" in str(info.value)
    assert not dest.exists()


def _listing(folder: Path) -> list[str]:
    """Every path below ``folder`` (links not followed), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def _data(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _path_max_escape(path: Path, dest: Path, hard_link: bool) -> Path:
    """The archive of CVE-2025-4517: links through a chain longer than PATH_MAX escape dest.

    Non-strict ``realpath`` stops resolving once the path passes PATH_MAX, so ``escape``
    (which the kernel resolves to ``dest/..``) looks like a folder inside ``dest``.
    """
    comp = "d" * min(247, (4000 - len(str(dest))) // 16 - 1)
    steps = "abcdefghijklmnop"
    members, parent = [], ""
    for step in steps:
        members += [_dir(os.path.join(parent, comp)), _link(os.path.join(parent, step), comp)]
        parent = os.path.join(parent, comp)
    chain = os.path.join(*steps, "l" * 254)
    members += [_link(chain, "../" * len(steps)), _link("escape", chain + "/..")]
    if hard_link:
        members += [_link("victim", "escape/outside.txt", tarfile.LNKTYPE),
                    _data("victim", b"overwritten")]
    else:
        members.append(_data("escape/outside.txt", b"written outside"))
    return _tar_with(path, *members)


@pytest.mark.parametrize("hard_link", [False, True])
def test_path_max_link_chain_cannot_escape(tmp_path, hard_link):
    outside = tmp_path / "outside.txt"
    if hard_link:
        outside.write_bytes(b"original")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"kept")
    archive = _path_max_escape(tmp_path / "escape.tar", dest, hard_link)
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest)
    assert str(info.value).startswith(f"{archive}: unsafe member 'a' (symlink to 'ddd")
    assert str(info.value).endswith("links are never extracted)")
    assert outside.read_bytes() == b"original" if hard_link else not outside.exists()
    assert _listing(dest) == ["keep.txt"]
    assert sorted(os.listdir(tmp_path)) == ["dest", "escape.tar"] + (["outside.txt"]
                                                                      if hard_link else [])


def test_repointed_link_cannot_escape(tmp_path):
    archive = _tar_with(tmp_path / "repoint.tar", _link("p/q", "r/s"),
                         _link("l", "p/q/../../.."), _link("p/q", "."))
    dest = tmp_path / "dest"
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest)
    assert str(info.value) == (f"{archive}: unsafe member 'p/q' (symlink to 'r/s'; links are "
                               "never extracted)")
    assert not os.path.lexists(dest)
    assert sorted(os.listdir(tmp_path)) == ["repoint.tar"]


@pytest.mark.parametrize("failure", ["unsafe", "truncated", "conflict"])
def test_failed_extraction_leaves_nothing_behind(tmp_path, failure):
    dest = tmp_path / "dest"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "keep.txt").write_bytes(b"kept")
    members = [_dir("new"), _file("new/a.txt"), _file("old/b.txt"), _file("old/sub/c.txt")]
    archive = tmp_path / "bad.tar.gz"
    if failure == "unsafe":
        _tar_with(archive, *members, _file("../evil"))
    elif failure == "truncated":
        good = _tar_with(tmp_path / "good.tar.gz", *members, _data("z", os.urandom(1 << 16)))
        archive.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:  # a folder where dest holds a file: found when moving into place
        _tar_with(archive, *members, _file("old/keep.txt/x"))
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest)
    msg = str(info.value)
    assert msg.startswith(f"{archive}: ") and "\n" not in msg
    if failure == "conflict":
        assert msg == (f"{archive}: 'old/keep.txt' already exists in {dest} as another kind "
                       "of entry; nothing was moved")
    assert _listing(dest) == ["old", "old/keep.txt"]
    assert (dest / "old" / "keep.txt").read_bytes() == b"kept"
    assert not (tmp_path / "evil").exists()


def test_existing_link_in_dest_is_not_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(elsewhere)
    archive = _tar_with(tmp_path / "ok.tar", _file("a/x.txt"))
    with pytest.raises(HsicompError, match="'a' already exists in .* as another kind of entry"):
        dl.safe_extract(archive, dest)
    assert _listing(elsewhere) == []
    assert _listing(dest) == ["a"]


@pytest.mark.parametrize("members", [
    [_data("bomb.bin", bytes(4 << 20))],  # one member: 4 MiB of zeros, a 4 KiB gzip
    [_data(f"part{i}.bin", bytes(300_000)) for i in range(5)],  # each below the cap
])
def test_size_cap_stops_a_decompression_bomb(tmp_path, members):
    archive = _tar_with(tmp_path / "bomb.tar.gz", _file("first.txt"), *members)
    assert archive.stat().st_size < 20_000
    dest = tmp_path / "dest"
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, dest, max_bytes=1 << 20)
    assert re.fullmatch(rf"{re.escape(str(archive))}: member '\w+\.bin' takes the extracted "
                        "size past the limit of 1048576 bytes; nothing was extracted",
                        str(info.value))
    assert not dest.exists()
    assert dl.safe_extract(archive, dest, max_bytes=5 << 20) == len(members) + 1


def test_member_count_cap(tmp_path):
    archive = _tar_with(tmp_path / "many.tar", *[_file(f"f{i}") for i in range(5)])
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, tmp_path / "dest", max_members=4)
    assert str(info.value) == (f"{archive}: more than 4 members (the member limit); nothing "
                               "was extracted")
    assert not (tmp_path / "dest").exists()
    assert dl.safe_extract(archive, tmp_path / "dest", max_members=5) == 5


def test_oversized_tar_header_is_refused(tmp_path):
    info = tarfile.TarInfo("big-header.txt")
    info.size = 3
    info.pax_headers = {"comment": "c" * (2 << 20)}  # a 2 MiB pax header
    archive = tmp_path / "pax.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(HsicompError, match="the tar headers of a member take more than"):
        dl.safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_stale_staging_folder_is_removed(tmp_path):
    archive = _tar_with(tmp_path / "good.tar.gz", _file("a/x.txt"))
    dest = tmp_path / "dest"
    stale = dest / ".good.tar.gz.k3j4h5g6.extracting"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"left by a killed run")
    assert dl.safe_extract(archive, dest) == 1
    assert _listing(dest) == ["a", "a/x.txt"]


def test_safe_extract_corrupt_archive(tmp_path):
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"this is not an archive" * 50)
    with pytest.raises(HsicompError) as info:
        dl.safe_extract(archive, tmp_path / "dest")
    assert str(info.value).startswith(f"{archive}: corrupt or not a tar archive")
    assert "\n" not in str(info.value)

    good = _tar_with(tmp_path / "good.tar.gz", _file("a.txt"), _file("b.txt"))
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(HsicompError, match="truncated.tar.gz: corrupt or not a tar archive"):
        dl.safe_extract(truncated, tmp_path / "dest2")


@pytest.fixture(scope="module")
def hyspecnet(tmp_path_factory):
    base = tmp_path_factory.mktemp("hyspecnet")
    info = build_hyspecnet_tree(base / "src")
    archives = build_hyspecnet_archives(base / "src", base / "archives")
    return base, info, archives


def test_archives_are_reproducible(hyspecnet, tmp_path):
    base, _, archives = hyspecnet
    assert sorted(archives) == ["hyspecnet-11k-01.tar.gz", "hyspecnet-11k-02.tar.gz",
                                "hyspecnet-11k-splits.tar.gz"]
    for name, md5 in archives.items():
        assert dl.md5_file(base / "archives" / name) == md5
    build_hyspecnet_tree(tmp_path / "again")
    assert build_hyspecnet_archives(tmp_path / "again", tmp_path / "archives") == archives


def test_extract_hyspecnet_archives(hyspecnet, tmp_path):
    import rasterio

    base, info, archives = hyspecnet
    dest = tmp_path / "data"
    for name in archives:
        assert dl.safe_extract(base / "archives" / name, dest) > 0
    root = dest / "hyspecnet-11k"
    src = base / "src" / "hyspecnet-11k"
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file()) == files
    for rel in files:
        assert (root / rel).read_bytes() == (src / rel).read_bytes()

    assert len(info["patches"]) == 6
    for kind in ("easy", "hard"):
        listed = []
        for split in ("train", "val", "test"):
            lines = (root / "splits" / kind / f"{split}.csv").read_text().splitlines()
            rels = [line.rsplit("/", 1)[0] for line in lines]
            assert rels == info["splits"][kind][split]
            for line in lines:
                patch = line.split("/")[1]
                assert line.endswith(f"{patch}/{patch}-DATA.npy")
                assert (root / "patches" / line).parent.is_dir()
            listed += rels
        assert sorted(listed) == sorted(info["patches"])
    hard_tiles = {s: {r.split("/")[0] for r in info["splits"]["hard"][s]}
                  for s in ("train", "val", "test")}
    assert not hard_tiles["test"] & (hard_tiles["train"] | hard_tiles["val"])

    rel = info["patches"][0]
    patch = rel.split("/")[1]
    with rasterio.open(root / "patches" / rel / f"{patch}-SPECTRAL_IMAGE.TIF") as ds:
        assert ds.dtypes[0] == "int16"
        assert ds.count == 224
        assert ds.nodata == -32768
        assert ds.compression.name == "deflate"
        assert ds.crs.to_epsg() == 32633
        assert ds.res == (30.0, 30.0)
        cube = ds.read()
    nodata = (cube == -32768).all(axis=0)
    assert 0 < nodata.sum() < nodata.size
    valid = cube[:, ~nodata]
    assert (valid < 0).any() and (valid > 16383).any()
    assert 0 <= np.median(valid) <= 6000


# --- command line -------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hsicomp")
    data_cli.register_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_download(server, payload, tmp_path, capsys):
    name, data, md5 = payload
    out = tmp_path / "o" / "blob.bin"
    args = _parser().parse_args(["download", "--url", server.url(name), "--md5", md5.upper(),
                                 "--out", str(out), "--retries", "1", "--timeout", "5",
                                 "--max-bytes", "300000", "--deadline", "30", "--min-rate",
                                 "1000", "--rate-window", "2", "--no-progress"])
    assert (args.retries, args.timeout, args.no_progress) == (1, 5.0, True)
    assert (args.max_bytes, args.deadline, args.min_rate, args.rate_window) == (300000, 30.0,
                                                                               1000.0, 2.0)
    assert args.func(args) == 0
    assert out.read_bytes() == data
    assert capsys.readouterr().err == ""


def test_cli_extract_writes_stamp_only_on_success(tmp_path):
    good = _tar_with(tmp_path / "good.tar.gz", _file("a/x.txt"), _file("a/y.txt"))
    stamp = tmp_path / "stamps" / "good.done"
    parser = _parser()
    args = parser.parse_args(["extract", str(good), "--dest", str(tmp_path / "d"),
                              "--stamp", str(stamp)])
    assert args.func(args) == 0
    assert stamp.read_text() == "archive: good.tar.gz\nmembers: 2\n"
    assert (tmp_path / "d" / "a" / "y.txt").read_bytes() == b"xxx"
    assert _listing(tmp_path / "d") == ["a", "a/x.txt", "a/y.txt"]  # no staging folder left

    bad = _tar_with(tmp_path / "bad.tar.gz", _file("a/z.txt"), _file("../evil"))
    args = parser.parse_args(["extract", str(bad), "--dest", str(tmp_path / "d"),
                              "--stamp", str(stamp)])
    with pytest.raises(HsicompError, match="unsafe member"):
        args.func(args)
    assert not stamp.exists()


@pytest.mark.parametrize("case", ["path_max", "hard_link", "repoint", "bomb", "members"])
def test_cli_extract_refuses_hostile_archives(tmp_path, capsys, case):
    dest = tmp_path / "dest"
    dest.mkdir()
    options = []
    if case in ("path_max", "hard_link"):
        archive = _path_max_escape(tmp_path / "a.tar", dest, case == "hard_link")
    elif case == "repoint":
        archive = _tar_with(tmp_path / "a.tar", _link("p/q", "r/s"), _link("l", "p/q/../../.."),
                            _link("p/q", "."))
    elif case == "bomb":
        archive = _tar_with(tmp_path / "a.tar.gz", _data("z.bin", bytes(1 << 20)))
        options = ["--max-bytes", "65536"]
    else:
        archive = _tar_with(tmp_path / "a.tar.gz", _file("x"), _file("y"))
        options = ["--max-members", "1"]
    stamp = tmp_path / "stamps" / "a.done"
    stamp.parent.mkdir()
    stamp.write_text("from an earlier run\n")
    rc = main(["extract", str(archive), "--dest", str(dest), "--stamp", str(stamp), *options])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"hsicomp: error: {archive}: ") and err.count("\n") == 1
    assert not stamp.exists()
    assert _listing(dest) == []
    assert sorted(os.listdir(tmp_path)) == sorted([archive.name, "dest", "stamps"])
