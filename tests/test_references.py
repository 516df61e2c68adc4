"""compare-rates: the workflow's rates next to reference rates measured elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_csv
from test_bdrate import write_rd

from hsicomp.cli import main

REFERENCES = {
    "anchor": {"source": "a standard coder, elsewhere", "compare": ["lms", "plain"],
               "rates": {"se": {"*": {"0": 6.0, "2": 4.0}}}},
    "authors": {"source": "the authors' coder", "compare": ["net"],
                "rates": {"se": {"S": {"0": 5.0, "5": 3.0}, "L": {"0": 4.8}}},
                "not_decoded": {"se": {"S": [0]}}},
}


def _rd(tmp_path: Path) -> Path:
    return write_rd(tmp_path / "rd.csv", [
        ("se", "lms", "L", 0, 5.4, "inf"), ("se", "lms", "L", 2, 3.6, 50.0),
        ("se", "lms", "L", 5, 2.5, 45.0), ("se", "plain", "-", 0, 6.3, "inf"),
        ("se", "net", "S", 0, 4.9, "inf"), ("se", "net", "S", 5, 3.3, 44.0),
        ("se", "net", "XS", 0, 5.5, "inf"), ("mid", "lms", "L", 0, 5.2, "inf"),
        ("se", "jpegls", "-", 0, 9.5, "inf"),
    ])


def test_rows_pair_every_rate_with_its_reference(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp.csv"
    assert main(["compare-rates", str(_rd(tmp_path)), "--references", json.dumps(REFERENCES),
                 "--out", str(out)]) == 0
    rows = read_csv(out)
    got = [(r["codec"], r["model"], r["delta"], r["reference"], r["reference_bpppc"],
            r["ratio"], r["reference_decoded"]) for r in rows]
    assert got == [
        ("lms", "L", "0", "anchor", "6", "0.9", "true"),
        ("lms", "L", "2", "anchor", "4", "0.9", "true"),
        ("plain", "-", "0", "anchor", "6", "1.05", "true"),
        ("net", "S", "0", "authors", "5", "0.98", "false"),  # its files did not decode
        ("net", "S", "5", "authors", "3", "1.1", "true"),
    ]  # no reference: lms at delta 5, net XS, mid, jpegls
    assert all(r["source"] for r in rows)
    assert "5 rows against 2 reference(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("references", "message"), [
    ("[1]", "must be a JSON object"),
    ("{", "not valid JSON"),
    ('{"a": {"compare": ["x"]}}', "needs 'compare' (codec labels) and 'rates'"),
    ('{"a": {"compare": ["x"], "rates": {"se": {"*": {"0": -1}}}}}', "bad rate '0': -1"),
    ('{"a": {"compare": ["x"], "rates": {"se": {"*": {"z": 1}}}}}', "bad rate 'z': 1"),
])
def test_bad_references_are_one_line_errors(tmp_path: Path, capsys, references: str,
                                            message: str) -> None:
    out = tmp_path / "cmp.csv"
    assert main(["compare-rates", str(_rd(tmp_path)), "--references", references,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsicomp: error: ") and err.count("\n") == 1 and message in err
    assert not out.exists()
