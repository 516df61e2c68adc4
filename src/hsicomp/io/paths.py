"""Checks of the files a command reads and writes, with one-line errors naming the file.

An input must be an existing regular file. An output may only replace a regular file, and
never one of the command's inputs (the same file, also through symbolic or hard links), so
a mistyped command line cannot destroy data or turn a device or a folder into a file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from hsicomp.errors import HsicompError


def os_error_text(exc: OSError) -> str:
    """``<file>: <problem>`` for an OSError (the problem alone when it names no file)."""
    problem = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    if exc.filename is None:
        return problem
    if exc.filename2 is not None:
        return f"{exc.filename} -> {exc.filename2}: {problem}"
    return f"{exc.filename}: {problem}"


def input_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it names an existing regular file; HsicompError saying what it is not."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise HsicompError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise HsicompError(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(mode):
        raise HsicompError(f"{path}: not a regular file")
    return path


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = ()) -> None:
    """HsicompError unless a new regular file may be written at ``path``.

    Refused: an existing directory, device, pipe or socket (followed through links), a
    path below something that is not a directory, and a path naming the same file as one
    of ``inputs``.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # reported below, with the offending parent
    except OSError as exc:
        raise HsicompError(f"{path}: cannot write ({exc.strerror or exc})") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise HsicompError(f"{path}: is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise HsicompError(f"{path}: not a regular file (refusing to replace it)")
        for source in inputs:
            try:
                same = os.path.samestat(st, os.stat(source))
            except (OSError, ValueError):
                continue
            if same:
                raise HsicompError(f"{path}: is the input file {source} (refusing to "
                                   f"overwrite it)")
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise HsicompError(f"{path}: {parent} is not a directory")
            break
