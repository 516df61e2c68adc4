"""The cache of models loaded from files: one load per file version and loader, bounded."""

from __future__ import annotations

import os

import pytest

from hsicomp.errors import HsicompError
from hsicomp.models import cache


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


class Loader:
    """Counts its calls; returns the file's text."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, path: str) -> str:
        self.calls.append(path)
        with open(path) as f:
            return f.read()


def test_one_load_per_file_version(tmp_path, monkeypatch):
    model = tmp_path / "m.pt"
    model.write_text("one")
    load = Loader()
    assert cache.load_cached(model, load) == "one"
    monkeypatch.chdir(tmp_path)
    assert cache.load_cached("m.pt", load) == "one"  # same file by another spelling
    assert len(load.calls) == 1
    stat = model.stat()
    model.write_text("two")  # same size and mtime: taken as the same version
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.load_cached(model, load) == "one"
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert cache.load_cached(model, load) == "two"
    model.write_text("three")
    assert cache.load_cached(model, load) == "three"
    assert len(load.calls) == 3
    assert len(cache._entries) == 1  # a new version replaces the old one


def test_loaders_are_kept_apart_and_the_cache_is_bounded(tmp_path):
    first, second = Loader(), Loader()
    paths = [tmp_path / f"{i}.pt" for i in range(cache.MAX_ENTRIES + 1)]
    for i, path in enumerate(paths):
        path.write_text(str(i))
    assert cache.load_cached(paths[0], first) == cache.load_cached(paths[0], second) == "0"
    assert len(first.calls) == len(second.calls) == 1
    for path in paths:
        cache.load_cached(path, first)
    assert len(cache._entries) == cache.MAX_ENTRIES
    cache.load_cached(paths[-1], first)
    cache.load_cached(paths[0], second)  # dropped as the least recently used
    assert len(first.calls) == len(paths) and len(second.calls) == 2


def test_missing_file_and_loader_errors(tmp_path):
    load = Loader()
    with pytest.raises(HsicompError, match="missing.pt: model file not found"):
        cache.load_cached(tmp_path / "missing.pt", load)

    def broken(path: str) -> str:
        raise HsicompError(f"{path}: not a model")

    (tmp_path / "bad.pt").write_text("x")
    for _ in range(2):  # errors are not cached
        with pytest.raises(HsicompError, match="bad.pt: not a model"):
            cache.load_cached(tmp_path / "bad.pt", broken)
    assert not cache._entries
