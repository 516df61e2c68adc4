"""Bjontegaard delta rate: PCHIP integration, analytic cases, the CSV table and errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from hsicomp.cli import main
from hsicomp.errors import HsicompError
from hsicomp.evaluation.bdrate import (
    BDRATE_COLUMNS,
    bd_rate,
    pchip_integral,
    pchip_slopes,
    write_bdrate,
)

REF = [(1.0, 40.0), (2.0, 46.0), (3.0, 51.0), (4.5, 55.0)]


def write_rd(path: Path, rows: list[tuple]) -> Path:
    """An rd CSV with rows (dataset, codec, model, delta, bpppc, psnr)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "codec", "model", "delta", "bpppc", "psnr"])
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def hermite(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Values of the cubic Hermite interpolant with the PCHIP slopes (independent check)."""
    d = pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (at - x[k]) / h
    return (y[k] * (2 * t**3 - 3 * t**2 + 1) + h * d[k] * (t**3 - 2 * t**2 + t)
            + y[k + 1] * (3 * t**2 - 2 * t**3) + h * d[k + 1] * (t**3 - t**2))


def test_pchip_keeps_monotone_data_monotone_and_integrates_exactly():
    x = np.array([30.0, 31.0, 35.0, 36.0, 50.0])
    y = np.array([0.0, 0.1, 2.0, 2.05, 3.0])
    fine = np.linspace(x[0], x[-1], 20001)
    values = hermite(x, y, fine)
    assert np.all(np.diff(values) >= -1e-12)
    np.testing.assert_allclose(hermite(x, y, x), y, atol=1e-12)
    for low, high in ((30.0, 50.0), (32.5, 45.2), (31.0, 31.0), (35.5, 36.0)):
        part = fine[(fine >= low) & (fine <= high)]
        part = np.concatenate([[low], part, [high]])
        v = hermite(x, y, part)
        trapezoid = float(np.sum((v[1:] + v[:-1]) * np.diff(part)) / 2)
        assert pchip_integral(x, y, low, high) == pytest.approx(trapezoid, abs=1e-6)


def test_pchip_slopes_are_zero_at_extrema_and_linear_for_two_points():
    d = pchip_slopes(np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 0.0]))
    assert d[1] == 0.0
    np.testing.assert_allclose(pchip_slopes(np.array([1.0, 3.0]), np.array([2.0, 6.0])),
                               [2.0, 2.0])


def test_identical_curves_give_zero():
    percent, low, high = bd_rate(REF, REF)
    assert percent == pytest.approx(0.0, abs=1e-12)
    assert (low, high) == (40.0, 55.0)


@pytest.mark.parametrize("factor", [0.5, 0.9, 1.0, 1.25, 3.0])
def test_rate_scaled_by_a_constant_gives_that_percentage(factor):
    scaled = [(r * factor, p) for r, p in REF]
    percent, _, _ = bd_rate(scaled, REF)
    assert percent == pytest.approx(100.0 * (factor - 1.0), rel=1e-12, abs=1e-12)


def test_log_linear_curves_sampled_at_different_psnrs():
    # log(rate) = a + b * psnr is reproduced exactly by PCHIP whatever the sampling
    def curve(a: float, psnrs: list[float]) -> list[tuple[float, float]]:
        return [(math.exp(a + 0.1 * p), p) for p in psnrs]

    test = curve(math.log(0.8), [38.0, 41.5, 44.0, 52.0, 60.0])
    ref = curve(0.0, [35.0, 45.0, 50.0, 57.0])
    percent, low, high = bd_rate(test, ref, min_points=2)  # the interpolation alone
    assert percent == pytest.approx(-20.0, rel=1e-10)
    assert (low, high) == (38.0, 57.0)


def test_matches_scipy_pchip_reference_value():
    # 100 * expm1 of the mean log-rate difference from scipy.interpolate.PchipInterpolator
    test = [(0.8, 41.0), (1.7, 47.5), (2.9, 53.0), (3.5, 56.0)]
    percent, low, high = bd_rate(test, REF, min_points=2)  # the interpolation alone
    assert percent == pytest.approx(-24.818079002135082, rel=1e-10)
    assert (low, high) == (41.0, 55.0)


def test_lossless_points_are_ignored_and_duplicates_keep_the_lowest_rate():
    with_lossless = [*REF, (6.0, math.inf), (5.0, 55.0)]
    assert bd_rate(with_lossless, REF)[0] == pytest.approx(0.0, abs=1e-12)


def test_curves_that_cannot_be_compared():
    with pytest.raises(ValueError, match="curve has 1 finite-PSNR point.*needs 4"):
        bd_rate([(1.0, 40.0), (5.0, math.inf)], REF)
    with pytest.raises(ValueError, match="reference has 0 finite-PSNR"):
        bd_rate(REF, [(5.0, math.inf)])
    with pytest.raises(ValueError, match="no shared PSNR range"):
        bd_rate([(1.0, 60.0), (2.0, 70.0), (3.0, 75.0), (4.0, 80.0)], REF)
    # two measured points decide nothing: 4 in the shared range are needed on both curves
    with pytest.raises(ValueError, match="curve has 2 point.* in the shared PSNR range"):
        bd_rate([(0.1, 30.0), (0.2, 35.0), (0.5, 42.0), (0.6, 44.0), (9.0, 70.0)], REF)
    with pytest.raises(ValueError, match="reference has 1 point.* in the shared PSNR range"):
        bd_rate([(0.5, 42.0), (0.7, 44.0), (0.9, 46.0), (1.1, 48.0), (1.3, 49.0)], REF)


def test_table_has_every_series_with_reason_or_value(tmp_path):
    rows = [("a", "ccsds123", "-", d, r, p) for d, (r, p) in enumerate(REF, start=1)]
    rows += [("a", "ccsds123", "-", 0, 6.0, "inf")]
    rows += [("a", "lw", m, d, r * f, p) for m, f in (("S", 0.9), ("XS", 0.8))
             for d, (r, p) in enumerate(REF, start=1)]
    rows += [("a", "jpeg2000", "-", 0, 6.5, "inf")]
    rows += [("b", "jpegls", "-", 1, 3.0, 50.0), ("b", "jpegls", "-", 2, 2.0, 45.0)]
    rd = write_rd(tmp_path / "rd.csv", rows)
    out = tmp_path / "out" / "bdrate.csv"
    assert main(["bdrate", str(rd), "--reference", "ccsds123", "--out", str(out)]) == 0
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == BDRATE_COLUMNS
    table = {(r["dataset"], r["codec"], r["model"]): r for r in read_csv(out)}
    assert list(table) == [("a", "ccsds123", "-"), ("a", "jpeg2000", "-"), ("a", "lw", "XS"),
                           ("a", "lw", "S"), ("b", "jpegls", "-")]
    assert float(table["a", "ccsds123", "-"]["bd_rate_percent"]) == pytest.approx(0, abs=1e-9)
    assert float(table["a", "lw", "XS"]["bd_rate_percent"]) == pytest.approx(-20.0)
    assert float(table["a", "lw", "S"]["bd_rate_percent"]) == pytest.approx(-10.0)
    assert table["a", "lw", "S"]["range_low"] == "40"
    assert table["a", "lw", "S"]["range_high"] == "55"
    assert table["a", "lw", "S"]["metric"] == "psnr"
    assert table["a", "lw", "S"]["points"] == "4"
    assert table["a", "lw", "S"]["reason"] == ""
    assert table["a", "jpeg2000", "-"]["bd_rate_percent"] == ""
    assert table["a", "jpeg2000", "-"]["reason"] == "curve has 0 finite-PSNR point(s), needs 4"
    assert table["b", "jpegls", "-"]["reason"] == "no reference curve for this dataset"
    assert all(r["reference"] == "ccsds123" for r in table.values())


def test_reference_with_several_models_must_name_one(tmp_path):
    rows = [("a", "lw", m, d, r * f, p) for m, f in (("S", 0.9), ("XS", 0.8))
            for d, (r, p) in enumerate(REF, start=1)]
    rd = write_rd(tmp_path / "rd.csv", rows)
    with pytest.raises(HsicompError, match=r"reference codec 'lw' has several models .*'lw S'"):
        write_bdrate(rd, "lw", tmp_path / "o.csv")
    table = write_bdrate(rd, "lw S", tmp_path / "o.csv")
    xs = next(r for r in table if r["model"] == "XS")
    assert xs["bd_rate_percent"] == pytest.approx(100 * (0.8 / 0.9 - 1))


def test_bad_input_is_one_line_error(tmp_path, capsys):
    rd = write_rd(tmp_path / "rd.csv", [("a", "jpegls", "-", 1, 2.0, 40.0)])
    out = tmp_path / "o.csv"
    assert main(["bdrate", str(rd), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"hsicomp: error: {rd}: reference codec 'ccsds123' not found "
                   f"(codecs: jpegls)\n")
    assert not out.exists()
    cases = {
        "missing.csv": "rate-distortion file not found",
        "cols.csv": r"not a rate-distortion file \(missing columns bpppc, psnr\)",
        "bad.csv": r"bad\.csv:3: malformed row",
        "zero.csv": "a ccsds123: rate 0.0 is not positive",
    }
    (tmp_path / "cols.csv").write_text("dataset,codec,model\na,b,c\n")
    write_rd(tmp_path / "bad.csv", [("a", "ccsds123", "-", 1, 2.0, 40.0),
                                    ("a", "ccsds123", "-", 2, "x", 41.0)])
    write_rd(tmp_path / "zero.csv", [("a", "ccsds123", "-", 1, 0.0, 40.0)])
    for name, message in cases.items():
        with pytest.raises(HsicompError, match=message):
            write_bdrate(tmp_path / name, "ccsds123", out)
    assert not out.exists()


def write_rd_sam(path: Path, rows: list[tuple]) -> Path:
    """An rd CSV with rows (dataset, codec, model, delta, lossy, bpppc, psnr, sam_deg)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "codec", "model", "delta", "lossy", "bpppc", "psnr",
                         "sam_deg"])
        writer.writerows(rows)
    return path


def test_sam_and_several_references(tmp_path):
    """Rates compared at equal SAM (smaller is better) and against each reference."""
    sams = [8.0, 5.0, 3.0, 2.0]
    rows = [("a", "anchor", f"s{k}", "", "true", r, p, sam)
            for k, ((r, p), sam) in enumerate(zip(REF, sams, strict=True))]
    # half the rate of the anchor at every SAM, a PSNR 1 dB lower than it
    rows += [("a", "net", f"l{k}", "", "true", r / 2, p - 1, sam)
             for k, ((r, p), sam) in enumerate(zip(REF, sams, strict=True))]
    rows += [("a", "ccsds123", "-", 0, "false", 6.0, "inf", 0.0)]
    rows += [("a", "ccsds123", "-", d, "false", r, p, 0.1 * d)
             for d, (r, p) in enumerate(REF, start=1)]
    rd = write_rd_sam(tmp_path / "rd.csv", rows)
    out = tmp_path / "bd.csv"
    assert main(["bdrate", str(rd), "--reference", "anchor", "--reference", "ccsds123",
                 "--metric", "psnr", "--metric", "sam", "--out", str(out)]) == 0
    table = {(r["codec"], r["reference"], r["metric"]): r for r in read_csv(out)}
    assert len(table) == 3 * 2 * 2
    sam = table["net", "anchor", "sam"]
    assert float(sam["bd_rate_percent"]) == pytest.approx(-50.0)
    assert (sam["range_low"], sam["range_high"]) == ("2", "8")  # degrees
    assert sam["points"] == "4"
    # at equal PSNR the curves share 40..54 dB, where the anchor has only 3 points
    assert "reference has 3 point(s) in the shared PSNR range" in table["net", "anchor", "psnr"][
        "reason"]
    # the lossless point (SAM 0) is left out as it is for PSNR
    assert table["ccsds123", "anchor", "sam"]["points"] == "4"
    assert table["ccsds123", "anchor", "sam"]["reason"] == (
        "no shared SAM range (curve 0.100..0.400, reference 2.000..8.000)")  # in degrees
    with pytest.raises(HsicompError, match="no sam_deg column"):
        write_bdrate(write_rd(tmp_path / "p.csv", [("a", "x", "-", 1, 2.0, 40.0)]), "x",
                     tmp_path / "o.csv", ("sam",))
