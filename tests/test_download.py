"""Tests for resumable downloads and safe archive extraction (local HTTP server only)."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hyspecnet_fixture import build_hyspecnet_archives, build_hyspecnet_tree

from hsicomp import download as dl
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


# --- safe extraction ---------------------------------------------------------------------

def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for info in members:
            if info.isfile():
                tf.addfile(info, io.BytesIO(b"x" * info.size))
            else:
                tf.addfile(info)
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


def test_safe_extract_allows_internal_links(tmp_path):
    archive = _tar_with(tmp_path / "ok.tar", _file("d/a.txt"), _link("d/b.txt", "a.txt"),
                        _link("d/c.txt", "d/a.txt", tarfile.LNKTYPE))
    dest = tmp_path / "dest"
    assert dl.safe_extract(archive, dest) == 3
    assert (dest / "d" / "b.txt").read_bytes() == b"xxx"
    assert (dest / "d" / "c.txt").read_bytes() == b"xxx"


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
    dl.register_cli(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_download(server, payload, tmp_path, capsys):
    name, data, md5 = payload
    out = tmp_path / "o" / "blob.bin"
    args = _parser().parse_args(["download", "--url", server.url(name), "--md5", md5.upper(),
                                 "--out", str(out), "--retries", "1", "--timeout", "5",
                                 "--no-progress"])
    assert (args.retries, args.timeout, args.no_progress) == (1, 5.0, True)
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

    bad = _tar_with(tmp_path / "bad.tar.gz", _file("a/z.txt"), _file("../evil"))
    args = parser.parse_args(["extract", str(bad), "--dest", str(tmp_path / "d"),
                              "--stamp", str(stamp)])
    with pytest.raises(HsicompError, match="unsafe member"):
        args.func(args)
    assert not stamp.exists()
