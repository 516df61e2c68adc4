"""CSV tables: the writer's exact bytes and the reader's one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hsicomp.errors import HsicompError
from hsicomp.io.table import read_table, write_table


def test_write_table_bytes_and_round_trip(tmp_path: Path):
    path = tmp_path / "sub" / "t.csv"
    rows = [{"a": 1, "b": 0.1, "c": "x,y", "d": None, "extra": "not written"},
            {"a": True, "b": 2.5e-7, "c": 'say "hi"', "d": "é"}]
    write_table(path, rows, ["a", "b", "c", "d"])
    assert path.read_bytes() == ('a,b,c,d\n1,0.1,"x,y",\nTrue,2.5e-07,"say ""hi""",é\n'
                                 .encode())
    table = read_table(path, ("c", "a"))
    assert table.columns == ["a", "b", "c", "d"]
    assert table == [{"a": "1", "b": "0.1", "c": "x,y", "d": ""},
                     {"a": "True", "b": "2.5e-07", "c": 'say "hi"', "d": "é"}]
    assert [p.name for p in path.parent.iterdir()] == ["t.csv"]  # no temporary file left


def test_write_table_formats_every_cell(tmp_path: Path):
    path = tmp_path / "t.csv"
    write_table(path, [{"x": 1 / 3, "y": 7}], ("x", "y"),
                lambda v: f"{v:.3g}" if isinstance(v, float) else v)
    assert path.read_text() == "x,y\n0.333,7\n"
    write_table(path, [], ["x"])
    assert path.read_text() == "x\n"
    assert read_table(path, ["x"]) == []


def test_read_table_accepts_a_byte_order_mark_and_crlf(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    assert read_table(path, ["a", "b"], exact=True) == [{"a": "1", "b": "2"}]


@pytest.mark.parametrize(("content", "kwargs", "message"), [
    (None, {}, "t.csv: thing not found"),
    (b"", {"required": ["a"]}, "t.csv: not a thing (missing columns a)"),
    (b"", {"required": ["a"], "exact": True}, "t.csv: not a thing (no header line)"),
    (b"a,b\n1,2\n", {"required": ["a", "c", "d"]}, "t.csv: not a thing (missing columns c, d)"),
    (b"b,a\n1,2\n", {"required": ["a", "b"], "exact": True},
     "t.csv: not a thing (columns b, a)"),
    (b"a,b\n1,2\n3\n", {}, "t.csv:3: malformed row"),
    (b"a,b\n1,2,3\n", {}, "t.csv:2: malformed row"),
    (b"a\n\xff\n", {}, "t.csv: not a thing (not UTF-8 text)"),
    (b"a\n" + b"x" * (csv.field_size_limit() + 1) + b"\n", {},
     "t.csv:2: malformed CSV (field larger than field limit"),
])
def test_read_table_errors_are_one_line(tmp_path: Path, content, kwargs, message):
    path = tmp_path / "t.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HsicompError) as info:
        read_table(path, what="thing", **kwargs)
    assert str(info.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(info.value)


def test_read_table_names_a_folder(tmp_path: Path):
    (tmp_path / "t.csv").mkdir()
    with pytest.raises(HsicompError, match=r"t\.csv: cannot read the thing \(Is a directory\)"):
        read_table(tmp_path / "t.csv", what="thing")
