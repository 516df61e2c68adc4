"""Progress bars on stderr: live on a terminal, a line every 30 s in a log file."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar over ``iterable`` (or updated by hand when ``iterable`` is None).

    On a terminal it redraws at most once a second; when stderr is a file (a Snakemake log)
    it writes one line at most every 30 seconds, so long jobs show where they are without
    filling their logs.
    """
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                disable=not enabled, mininterval=1.0 if terminal else 30.0,
                dynamic_ncols=terminal, ascii=not terminal)
