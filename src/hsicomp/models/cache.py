"""Models loaded from files, kept in memory while the file is unchanged.

:func:`load_cached` calls ``loader(path)`` once per loader and file version: the key is
the loader, the resolved path, and the file's modification time (ns) and size, so a file
rewritten in place is loaded again. At most :data:`MAX_ENTRIES` results are kept (least
recently used dropped first), and a new version of a file replaces the old one's entry.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hsicomp.errors import HsicompError

T = TypeVar("T")

#: Loaded models kept at most (over all loaders).
MAX_ENTRIES = 8

_entries: OrderedDict[tuple[Any, str, int, int], Any] = OrderedDict()
_lock = threading.Lock()


def load_cached(path: str | Path, loader: Callable[[str], T]) -> T:
    """``loader(str(Path(path)))``, reused while the file keeps its path, mtime and size.

    HsicompError when the file does not exist; errors of ``loader`` are not cached.
    """
    try:
        st = os.stat(path)
    except OSError:
        raise HsicompError(f"{path}: model file not found") from None
    resolved = str(Path(path).resolve())
    key = (loader, resolved, st.st_mtime_ns, st.st_size)
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]
    value = loader(str(Path(path)))
    with _lock:
        for old in [k for k in _entries if k[:2] == key[:2]]:
            del _entries[old]
        _entries[key] = value
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    """Forget every loaded model."""
    with _lock:
        _entries.clear()
