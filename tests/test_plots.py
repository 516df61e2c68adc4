"""Figures and the per-band bits behind them: band_bits of the codecs, the band-rates table,
the rate-distortion figures and the error image."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import smooth_cube

from hsicomp.cli import main
from hsicomp.codecs import get_codec
from hsicomp.entropy import golomb
from hsicomp.errors import HsicompError
from hsicomp.evaluation.one_patch import (
    BAND_RATE_COLUMNS,
    band_rates,
    decode_patch,
)
from hsicomp.evaluation.shards import encode_shard
from hsicomp.figures.plots import (
    plot_error_image,
    plot_lossless,
    plot_rate_error,
    plot_rd,
)
from hsicomp.io.bsq import write_bsq
from hsicomp.io.container import unpack
from hsicomp.io.manifest import PatchRecord, write_manifest

SHAPE = (8, 12, 10)
BIT_DEPTH = 12
ARITH_HEADER_BITS = 40  # version byte + word count of the range coder stream


def noisy_cube() -> np.ndarray:
    """Smooth bands 0..3, very noisy bands 4..7: the noisy ones must cost more bits."""
    cube = smooth_cube(SHAPE, BIT_DEPTH, 3, noise=0.0).astype(np.int64)
    noise = np.random.default_rng(1).integers(-1500, 1500, (4, *SHAPE[1:]))
    cube[4:] = np.clip(cube[4:] + noise, 0, (1 << BIT_DEPTH) - 1)
    return cube.astype(np.uint16)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """Two test patches around a training patch."""
    root = tmp_path / "data"
    records = []
    for i, split in enumerate(["test", "train", "test"]):
        sha = write_bsq(root / "test" / f"p{i}.bsq", smooth_cube(SHAPE, BIT_DEPTH, 10 + i))
        records.append(PatchRecord(f"p{i}", split, *SHAPE, BIT_DEPTH, f"test/p{i}.bsq",
                                   0, 0, 0, sha))
    write_manifest(root / "manifest.csv", records)
    return root / "manifest.csv"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- band_bits


@pytest.mark.parametrize(("codec", "params", "delta"), [
    ("jpegls", {}, 0), ("jpegls", {}, 3), ("jpeg2000", {}, 0), ("jpegxl", {}, 0),
    ("raw", {}, 0), ("ccsds123", {}, 0), ("ccsds123", {}, 3),
    ("ccsds123", {"coder": "arith"}, 0), ("ccsds123", {"coder": "arith"}, 3),
])
def test_band_bits_add_up_to_the_payload(codec, params, delta):
    cube = noisy_cube()
    coder = get_codec(codec, params)
    data = coder.encode(cube, delta, BIT_DEPTH)
    payload_bits = 8 * len(unpack(data, "x")[2])
    bits = coder.last_stats["band_bits"]
    assert bits.dtype == np.int64 and bits.shape == (SHAPE[0],)
    total = int(bits.sum())
    if params.get("coder") == "arith":
        # every word of the range coder (closing words included) is some band's; only the
        # stream header is not
        assert payload_bits - total == ARITH_HEADER_BITS
    elif codec == "ccsds123":
        assert (total + 7) // 8 * 8 == payload_bits  # Golomb: padding of the last byte only
    else:
        assert total == payload_bits
    if codec != "raw":
        assert bits[4:].min() > bits[:4].max()


def test_golomb_band_bits_are_the_code_lengths_and_the_stream_is_unchanged():
    rng = np.random.default_rng(4)
    mapped = rng.geometric(0.05, size=(5, 7, 9)).astype(np.int64)
    params = golomb.SampleAdaptiveParams(dynamic_range=12)
    for order in golomb.ORDERS:
        data, bits = golomb.encode_bands(mapped, params, order)
        assert data == golomb.encode(mapped, params, order)
        expected = golomb.code_lengths(mapped, params, order).sum(axis=(1, 2), dtype=np.int64)
        np.testing.assert_array_equal(bits, expected)


# --------------------------------------------------------------------------- band rates


def encoded(manifest: Path, tmp_path: Path, codec: str, params: dict, delta: int,
            shards: int = 2) -> tuple[list[Path], list[Path]]:
    """Encode every shard as the workflow does; return the bitstream folders and the
    band-bits CSVs."""
    folders, band_bits = [], []
    for shard in range(shards):
        out = tmp_path / "bits" / f"{codec}-{delta}-{len(str(params))}" / f"shard{shard}"
        encode_shard(manifest, shard, shards, codec, params, delta, out,
                     out.with_suffix(".timings.csv"), progress=False,
                     band_bits_csv=out.with_suffix(".band_bits.csv"))
        folders.append(out)
        band_bits.append(out.with_suffix(".band_bits.csv"))
    return folders, band_bits


def test_band_rates_come_from_the_encode_jobs(manifest, tmp_path):
    """encode-shard writes every patch's band bits; band-rates reads them (no encoding)."""
    _, jpegls = encoded(manifest, tmp_path, "jpegls", {}, 0)
    _, arith = encoded(manifest, tmp_path, "ccsds123", {"coder": "arith"}, 0)
    assert read_csv(jpegls[0])[0] == {"patch_id": "p0", "band": "0",
                                      "bits": read_csv(jpegls[0])[0]["bits"]}
    out = tmp_path / "res" / "band_rates.csv"
    sources = {"arith": {"model": "-", "files": [str(f) for f in arith]},
               "jpegls": {"model": "-", "files": [str(f) for f in jpegls]}}
    assert main(["band-rates", "--manifest", str(manifest), "--sources",
                 json.dumps(sources), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == BAND_RATE_COLUMNS
    rows = read_csv(out)
    assert [(r["codec"], r["band"]) for r in rows] == \
        [(c, str(b)) for c in ("arith", "jpegls") for b in range(SHAPE[0])]
    assert {(r["model"], r["patch_id"], r["delta"]) for r in rows} == {("-", "p0", "0")}
    codec = get_codec("jpegls")
    codec.encode(smooth_cube(SHAPE, BIT_DEPTH, 10), 0, BIT_DEPTH)  # patch p0
    assert [int(r["bits"]) for r in rows if r["codec"] == "jpegls"] == \
        codec.last_stats["band_bits"].tolist()
    for r in rows:
        assert float(r["bpppc_band"]) == pytest.approx(int(r["bits"]) / (12 * 10))

    png, pdf = tmp_path / "fig" / "band.png", tmp_path / "fig" / "band.pdf"
    assert main(["plot-band-rates", str(out), "--png", str(png), "--pdf", str(pdf)]) == 0
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000

    _, raw = encoded(manifest, tmp_path, "raw", {}, 0)
    second = band_rates(manifest, {"raw": {"model": "-", "files": raw}}, 0, patch_id="p2")
    assert {r["patch_id"] for r in second} == {"p2"}
    assert {r["bits"] for r in second} == {16 * 12 * 10}


def test_band_rates_errors(manifest, capsys, tmp_path):
    _, jpegls = encoded(manifest, tmp_path, "jpegls", {}, 0)
    with pytest.raises(HsicompError, match="no test patch 'p1'"):
        band_rates(manifest, {"j": {"model": "-", "files": jpegls}}, 0, patch_id="p1")
    with pytest.raises(HsicompError, match="no band bits of patch p2"):
        band_rates(manifest, {"j": {"model": "-", "files": jpegls[:1]}}, 0, patch_id="p2")
    with pytest.raises(HsicompError, match="nope.csv: band-bits file not found"):
        band_rates(manifest, {"j": {"model": "-", "files": [tmp_path / "nope.csv"]}}, 0)
    out = str(tmp_path / "b.csv")
    assert main(["band-rates", "--manifest", str(manifest), "--sources", "{", "--out", out]) == 2
    assert "--sources is not valid JSON" in capsys.readouterr().err
    assert main(["band-rates", "--manifest", str(manifest), "--sources", '{"x": {"model": "-"}}',
                 "--out", out]) == 2
    assert "--sources entry x: expected an object with model and files" in \
        capsys.readouterr().err
    # a codec that attributes no bits to bands writes a band-bits file without rows
    empty = tmp_path / "empty.band_bits.csv"
    empty.write_text("patch_id,band,bits\n")
    assert main(["band-rates", "--manifest", str(manifest), "--sources",
                 json.dumps({"lw": {"model": "-", "files": [str(empty)]}}), "--out", out]) == 2
    assert capsys.readouterr().err == ("hsicomp: error: codec lw does not report per-band "
                                       "bits\n")
    assert not Path(out).exists()


# --------------------------------------------------------------------------- rd figures


def write_rd(path: Path, columns: list[str], rows: list[tuple]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


RD_COLUMNS = ["dataset", "codec", "model", "delta", "bpppc", "psnr", "max_abs_error"]
RD_ROWS = [(d, c, m, delta, rate * (1 + 0.1 * k), psnr, delta)
           for d in ("a", "b")
           for k, (c, m) in enumerate([("jpegls", "-"), ("lw", "XS"), ("lw", "S")])
           for delta, rate, psnr in ((0, 6.0, math.inf), (2, 4.0, 80.0), (10, 2.0, 65.0))]


@pytest.mark.parametrize("command", ["plot-rd", "plot-rate-error", "plot-lossless"])
def test_rd_figures_are_written_without_timestamps(tmp_path, command):
    rd = write_rd(tmp_path / "rd.csv", RD_COLUMNS, RD_ROWS)
    out = tmp_path / "figures"
    png, pdf = out / "f.png", out / "f.pdf"
    assert main([command, str(rd), "--png", str(png), "--pdf", str(pdf)]) == 0
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG") and pdf.read_bytes().startswith(b"%PDF")
    assert b"CreationDate" not in pdf.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["f.pdf", "f.png"]
    assert main([command, str(rd), "--png", str(png)]) == 0
    assert png.read_bytes() == first


def test_rate_error_falls_back_to_delta_and_lossless_needs_delta(tmp_path):
    rows = [r[:6] for r in RD_ROWS]
    rd = write_rd(tmp_path / "rd.csv", RD_COLUMNS[:6], rows)
    plot_rate_error(rd, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 1000
    no_delta = write_rd(tmp_path / "nd.csv", ["dataset", "codec", "model", "bpppc", "psnr"],
                        [(r[0], r[1], r[2], r[4], r[5]) for r in rows])
    with pytest.raises(HsicompError, match="nd.csv: needs a delta column"):
        plot_lossless(no_delta, tmp_path / "l.png")
    lossy = write_rd(tmp_path / "lossy.csv", RD_COLUMNS[:6], [r for r in rows if r[3]])
    with pytest.raises(HsicompError, match=r"no lossless \(delta = 0\) rows"):
        plot_lossless(lossy, tmp_path / "l.png")
    assert not (tmp_path / "l.png").exists()


# --------------------------------------------------------------------------- error image


def test_error_image_from_the_verified_bitstream(manifest, tmp_path):
    """The error image decodes the bitstream the evaluation wrote; nothing is encoded."""
    folders, _ = encoded(manifest, tmp_path, "ccsds123", {}, 3)
    patch = decode_patch(manifest, folders, "ccsds123", {}, 3)
    m = patch.metrics
    assert 0 < m["max_abs_error"] <= 3 and math.isfinite(m["psnr"])
    assert m["bpppc"] == 8 * (folders[0] / "p0.hsic").stat().st_size / np.prod(SHAPE)
    png, pdf = tmp_path / "err.png", tmp_path / "err.pdf"
    plot_error_image(patch, "ccsds123", 3, png, pdf, band=2)
    assert png.stat().st_size > 1000 and pdf.stat().st_size > 1000
    arith, _ = encoded(manifest, tmp_path, "ccsds123", {"coder": "arith"}, 0)
    assert main(["error-image", "--manifest", str(manifest), "--bitstreams",
                 *map(str, arith), "--codec", "ccsds123", "--label", "arith", "--delta", "0",
                 "--patch", "p2", "--png", str(png)]) == 0
    with pytest.raises(HsicompError, match="band 8 out of range for 8 bands"):
        plot_error_image(patch, "ccsds123", 3, png, band=8)
    with pytest.raises(HsicompError, match="coded at delta 3, not 1"):
        decode_patch(manifest, folders, "ccsds123", {}, 1)
    with pytest.raises(HsicompError, match="no bitstream p2.hsic in"):
        decode_patch(manifest, folders[:1], "ccsds123", {}, 3, patch_id="p2")
    with pytest.raises(HsicompError, match="written by codec 'ccsds123'"):
        decode_patch(manifest, folders, "jpegls", {}, 3)


def test_rd_rate_axis_turns_logarithmic_for_wide_rate_ranges(tmp_path, monkeypatch):
    import hsicomp.figures.plots as plots

    scales: list[str] = []

    def capture(fig, out_png, out_pdf=None):
        scales.extend(ax.get_xscale() for ax in fig.axes if ax.get_ylabel() == "PSNR (dB)")
        plots._pyplot().close(fig)

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.plot_rd(write_rd(tmp_path / "near.csv", RD_COLUMNS, RD_ROWS), tmp_path / "n.png")
    lossy = [("a", "gdn", "-", 0, 0.02, 40.0, 900), ("a", "gdn", "-", 0, 0.05, 43.0, 700)]
    plots.plot_rd(write_rd(tmp_path / "wide.csv", RD_COLUMNS, RD_ROWS + lossy), tmp_path / "w.png")
    assert scales == ["linear", "linear", "log", "linear"]  # only panel "a" spans 0.02..6


def test_twenty_curves_all_look_different():
    from hsicomp.figures.plots import _looks

    looks = _looks([f"c{i}" for i in range(20)])
    assert len(set(looks.values())) == 20


def test_plot_rd_peak_option_is_checked(tmp_path, capsys):
    rd = tmp_path / "rd.csv"
    rd.write_text("dataset,codec,model,bpppc,psnr\na,x,-,1.0,40\na,x,-,2.0,50\n")
    png = tmp_path / "rd.png"
    assert main(["plot-rd", str(rd), "--png", str(png), "--peak", "a=4095"]) == 0
    assert png.stat().st_size > 1000
    for bad in ("a", "a=0", "=5", "a=x"):
        assert main(["plot-rd", str(rd), "--png", str(png), "--peak", bad]) == 2
    err = capsys.readouterr().err
    assert "is not DATASET=PEAK with a peak above 0" in err


def _drawn(monkeypatch, draw) -> object:
    """The matplotlib figure ``draw()`` saves, kept open for inspection."""
    from hsicomp.figures import plots

    kept = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: kept.setdefault("fig", fig))
    draw()
    return kept["fig"]


def test_rd_figures_stay_readable_with_lossy_codecs(tmp_path, monkeypatch):
    """Near-lossless errors of 0-40 next to lossy errors in the thousands; deltas, peaks,
    lossless rates and the legend placed where nothing runs out of the frame."""
    from hsicomp.figures.plots import plot_rate_error

    rd = tmp_path / "rd.csv"
    lines = ["dataset,codec,model,delta,lossy,bpppc,psnr,max_abs_error"]
    lines += [f"a,ccsds123,-,{d},false,{6 - d / 10},{math.inf if d == 0 else 90 - d},{d}"
              for d in (0, 1, 5, 40)]
    lines += [f"a,gdn,l{i},,true,{0.01 * i},{35 + i},{3000 - 100 * i}" for i in (1, 2, 3)]
    rd.write_text("\n".join(lines) + "\n")
    fig = _drawn(monkeypatch, lambda: plot_rate_error(rd, tmp_path / "e.png"))
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog" and ax.get_xscale() == "log"
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles == {"ccsds123": "-", "gdn": "--"}
    assert fig.legends and fig.legends[0]._loc == 8  # below the panels ("lower center")

    fig = _drawn(monkeypatch, lambda: plot_rd(rd, tmp_path / "rd.png", peaks={"a": 4095}))
    top, strip = fig.axes[:2]
    assert top.get_title() == "a (PSNR peak 4095)"
    assert {t.get_text() for t in top.texts} >= {"1", "5", "40"}  # each delta labelled
    assert [t.get_text() for t in strip.get_yticklabels()] == ["ccsds123  6.000"]
    assert not strip.texts  # no value labels drawn beside the markers, out of the frame


def test_rd_figure_has_a_sam_panel_when_the_table_has_sam(tmp_path, monkeypatch):
    import hsicomp.figures.plots as plots

    labels: list[list[str]] = []

    def capture(fig, out_png, out_pdf=None):
        labels.append([ax.get_ylabel() for ax in fig.axes])
        plots._pyplot().close(fig)

    monkeypatch.setattr(plots, "save_figure", capture)
    plots.plot_rd(write_rd(tmp_path / "plain.csv", RD_COLUMNS, RD_ROWS), tmp_path / "p.png")
    rows = [(*r, 0.0 if math.isinf(r[5]) else 10.0 / r[5]) for r in RD_ROWS]
    plots.plot_rd(write_rd(tmp_path / "sam.csv", [*RD_COLUMNS, "sam_deg"], rows),
                  tmp_path / "s.png")
    assert "SAM (degrees)" not in labels[0]
    assert labels[1].count("SAM (degrees)") == 2 and labels[1].count("PSNR (dB)") == 2


def test_spectral_signature_decodes_the_point_nearest_the_rate(manifest, tmp_path):
    """Each lossy codec is shown at its evaluated point nearest the asked rate."""
    from hsicomp.evaluation.one_patch import nearest_point, spectral_signatures

    models = {}
    for step in (50, 2000):
        folders, _ = encoded(manifest, tmp_path, "klt", {"step": step}, 0)
        models[f"s{step}"] = {"params": {}, "bitstreams": [str(f) for f in folders]}
    rd_rows = [{"dataset": "d", "codec": "klt", "model": "s50", "psnr": 60.0, "bpppc": 1.0},
               {"dataset": "d", "codec": "klt", "model": "s2000", "psnr": 40.0, "bpppc": 0.1}]
    assert nearest_point(rd_rows, "d", "klt", 0.2) == "s2000"
    assert nearest_point(rd_rows, "d", "klt", 0.5) == "s50"
    assert nearest_point(rd_rows, "d", "nope", 0.5) is None
    sources = {"klt": {"codec": "klt", "models": models}}
    original, signatures = spectral_signatures(manifest, rd_rows, "d", sources, 0.2,
                                               pixel=(3, 4))
    cube = smooth_cube(SHAPE, BIT_DEPTH, 10)  # test patch p0
    np.testing.assert_array_equal(original, cube[:, 3, 4])
    (sig,) = signatures
    assert sig.model == "s2000" and sig.spectrum.shape == (SHAPE[0],)
    assert sig.metrics["psnr"] < math.inf
    with pytest.raises(HsicompError, match=r"pixel \(12, 0\) is outside the 12x10 patch"):
        spectral_signatures(manifest, rd_rows, "d", sources, 0.2, pixel=(12, 0))
    rd = tmp_path / "rd.csv"
    write_rd(rd, ["dataset", "codec", "model", "delta", "lossy", "bpppc", "psnr"],
             [("d", "klt", "s50", "", "true", 1.0, 60.0),
              ("d", "klt", "s2000", "", "true", 0.1, 40.0)])
    png = tmp_path / "sig.png"
    assert main(["spectral-signature", str(rd), "--manifest", str(manifest), "--dataset", "d",
                 "--rate", "0.05", "--sources", json.dumps(sources), "--png", str(png)]) == 0
    assert png.stat().st_size > 1000
