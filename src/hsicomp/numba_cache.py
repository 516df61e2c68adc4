"""numba's on-disk cache, keyed on the source files a compiled function depends on.

``numba.njit(cache=True)`` reuses the machine code of a function for as long as the file
that defines it is unchanged. It does not look at the files of the jitted functions, numba
intrinsics and global constants that the function compiles in: after an edit of one of
those, it would go on running the old code. :func:`cached_njit` is ``njit`` with a cache
whose index key also holds a sha256 digest of a given list of files (all the files of a
package and those it takes compiled code or constants from), so editing any of them
recompiles every function of that package. (Entries under older digests stay in numba's index
until the defining file changes.) It relies on two internals of numba, ``Cache._index_key``
and a dispatcher's ``_cache``; ``tests/test_numba_cache.py`` checks the whole behaviour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from numba import njit
from numba.core.caching import FunctionCache

__all__ = ["SourcesCache", "cached_njit", "source_digest"]


def source_digest(paths: Iterable[str | Path]) -> str:
    """sha256 of the names and contents of the files ``paths`` (in order of their names)."""
    digest = hashlib.sha256()
    for path in sorted((Path(p) for p in paths), key=lambda p: (p.name, str(p))):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


class SourcesCache(FunctionCache):
    """numba's function cache, with the digest of ``sources`` in every index key."""

    def __init__(self, py_func: Callable, sources: tuple[Path, ...], digest: str) -> None:
        super().__init__(py_func)
        self.sources = sources
        self.digest = digest

    def _index_key(self, sig: Any, codegen: Any) -> tuple:
        return (*super()._index_key(sig, codegen), self.digest)


def cached_njit(sources: Iterable[str | Path], **options: Any) -> Callable[[Callable], Any]:
    """A decorator: ``numba.njit(**options)`` cached on disk under the digest of ``sources``.

    The digest is taken once, here (of the sources as they are when the module is imported).
    """
    if "cache" in options:
        raise TypeError("cached_njit always caches; do not pass cache")
    paths = tuple(Path(p) for p in sources)
    digest = source_digest(paths)

    def decorate(fn: Callable) -> Any:
        dispatcher = njit(**options)(fn)
        # what njit(cache=True) does, with numba's FunctionCache replaced
        dispatcher._cache = SourcesCache(fn, paths, digest)
        return dispatcher

    return decorate
