"""CSV tables with a header line: how the package reads and writes every one of them.

Files are UTF-8 with ``\\n`` line ends; fields are quoted only where needed (the ``csv``
module's defaults). Reading gives every cell as text; callers convert and check values.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from hsicomp.errors import HsicompError
from hsicomp.io.atomic import atomic_write_text


class Table(list[dict[str, str]]):
    """Rows of a CSV file as text, keyed by column; ``columns`` is its header line."""

    def __init__(self, columns: Sequence[str], rows: Iterable[dict[str, str]] = ()) -> None:
        super().__init__(rows)
        self.columns = list(columns)


def read_table(path: str | os.PathLike, required: Sequence[str] = (), *, what: str = "table",
               exact: bool = False) -> Table:
    """Read a CSV file with a header line.

    ``required`` columns must be present (with ``exact``, the header must be exactly these
    columns in this order). ``what`` names the kind of file in messages. Raises a one-line
    :class:`HsicompError` naming the file when it is missing or unreadable, is not CSV text,
    lacks a column, or has a row with more or fewer fields than the header.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            try:
                columns = reader.fieldnames or []
                _check_columns(path, columns, required, what, exact)
                rows = Table(columns)
                for row in reader:
                    if None in row or None in row.values():
                        raise HsicompError(f"{path}:{reader.line_num}: malformed row")
                    rows.append(row)
            except csv.Error as exc:
                line = reader.reader.line_num  # the DictReader's own count lags on errors
                raise HsicompError(f"{path}:{line}: malformed CSV ({exc})") from None
    except FileNotFoundError:
        raise HsicompError(f"{path}: {what} not found") from None
    except UnicodeDecodeError:
        raise HsicompError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as exc:
        raise HsicompError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    return rows


def _check_columns(path: Path, columns: list[str], required: Sequence[str], what: str,
                   exact: bool) -> None:
    if exact and columns != list(required):
        found = f"columns {', '.join(columns)}" if columns else "no header line"
        raise HsicompError(f"{path}: not a {what} ({found})")
    missing = [c for c in required if c not in columns]
    if missing:
        raise HsicompError(f"{path}: not a {what} (missing columns {', '.join(missing)})")


def write_table(path: str | os.PathLike, rows: Iterable[Mapping[str, object]],
                columns: Sequence[str], fmt: Callable[[object], object] | None = None) -> None:
    """Write ``rows`` under a header of ``columns`` to ``path`` atomically (temporary file,
    rename). Each cell is ``fmt(row[column])`` (the value itself without ``fmt``), written as
    ``str`` writes it, None as empty."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    if fmt is None:
        writer.writerows([row[c] for c in columns] for row in rows)
    else:
        writer.writerows([fmt(row[c]) for c in columns] for row in rows)
    atomic_write_text(path, buf.getvalue())
