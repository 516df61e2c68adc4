"""Shard encoding and verification, aggregation and the rate-distortion figure, end to end."""

import csv
import hashlib
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line_error

from hsicomp import cli
from hsicomp.errors import HsicompError
from hsicomp.evaluation import shards as evaluate
from hsicomp.evaluation.aggregate import aggregate
from hsicomp.evaluation.metrics import PATCH_COLUMNS
from hsicomp.evaluation.shards import encode_shard, verify_shard
from hsicomp.figures.plots import plot_rd
from hsicomp.io.bsq import write_bsq
from hsicomp.io.manifest import PatchRecord, read_manifest, select_shard, write_manifest

SHAPE = (4, 12, 10)
BIT_DEPTH = 12
PEAK = 4095.0
MODULES = ("hsicomp.cli.evaluate", "hsicomp.cli.figures")


def main(argv: list[str]) -> int:
    """The command line with this file's commands registered, whatever cli.py lists."""
    saved = cli.COMMAND_MODULES
    cli.COMMAND_MODULES = tuple(dict.fromkeys(saved + MODULES))
    try:
        return cli.main(argv)
    finally:
        cli.COMMAND_MODULES = saved


def _smooth_cube(rng: np.random.Generator) -> np.ndarray:
    """A spatially and spectrally smooth 12-bit cube with a little noise."""
    bands, rows, cols = SHAPE
    y, x = np.mgrid[0:rows, 0:cols]
    base = 1500 + 400 * np.sin(x / 3 + rng.uniform(0, 6)) + 300 * np.cos(y / 4)
    scale = np.linspace(0.8, 1.2, bands)[:, None, None]
    cube = base[None] * scale + rng.normal(0, 20, SHAPE)
    return np.clip(np.rint(cube), 0, PEAK).astype(np.uint16)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A manifest with five test patches and one training patch; returns the manifest path."""
    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    records = []
    for i, split in enumerate(["test", "train", "test", "test", "test", "test"]):
        name = f"p{i}"
        sha = write_bsq(root / "patches" / f"{name}.bsq", _smooth_cube(rng))
        records.append(PatchRecord(name, split, *SHAPE, BIT_DEPTH, f"patches/{name}.bsq",
                                   0, 0, 0, sha))
    manifest = root / "manifest.csv"
    write_manifest(manifest, records)
    return manifest


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(manifest: Path, work: Path, codec: str, delta: int, shard: int = 0,
         shards: int = 2) -> tuple[Path, Path]:
    """Encode and verify one shard; return (bitstream folder, metrics CSV)."""
    out_dir = work / f"{codec}_d{delta}_s{shard}"
    timings = work / f"{codec}_d{delta}_s{shard}_timings.csv"
    metrics = work / f"{codec}_d{delta}_s{shard}_metrics.csv"
    n = encode_shard(manifest, shard, shards, codec, {}, delta, out_dir, timings)
    assert n == len(select_shard(read_manifest(manifest), shard, shards))
    verify_shard(manifest, shard, shards, out_dir, timings, "toy", codec, "none", delta, {},
                 PEAK, metrics)
    return out_dir, metrics


@pytest.mark.parametrize(("codec", "delta"), [("jpegls", 0), ("jpegls", 2), ("jpeg2000", 0)])
def test_encode_verify_roundtrip(dataset: Path, tmp_path: Path, codec: str, delta: int):
    out_dir, metrics = _run(dataset, tmp_path / "work", codec, delta)
    rows = _read_csv(metrics)
    assert list(rows[0]) == PATCH_COLUMNS
    assert [r["patch_id"] for r in rows] == ["p0", "p3", "p5"]
    for r in rows:
        size = (out_dir / f"{r['patch_id']}.hsic").stat().st_size
        assert int(r["bytes"]) == size
        assert r["file"] == str(out_dir / f"{r['patch_id']}.hsic")
        assert r["sha256"] == hashlib.sha256(Path(r["file"]).read_bytes()).hexdigest()
        assert float(r["bpppc"]) == pytest.approx(8 * size / math.prod(SHAPE))
        assert r["roundtrip_ok"] == "true"
        assert int(r["max_abs_error"]) <= delta
        assert (r["dataset"], r["codec"], r["model"], int(r["delta"])) == \
            ("toy", codec, "none", delta)
        if delta == 0:
            assert float(r["mse"]) == 0 and r["psnr"] == "inf"
    timings = _read_csv(tmp_path / "work" / f"{codec}_d{delta}_s0_timings.csv")
    assert [int(t["bytes"]) for t in timings] == [int(r["bytes"]) for r in rows]


def test_near_lossless_is_smaller_and_lossy(dataset: Path, tmp_path: Path):
    _, m0 = _run(dataset, tmp_path, "jpegls", 0)
    _, m2 = _run(dataset, tmp_path, "jpegls", 2)
    lossless, near = _read_csv(m0), _read_csv(m2)
    assert sum(int(r["bytes"]) for r in near) < sum(int(r["bytes"]) for r in lossless)
    assert any(int(r["max_abs_error"]) > 0 for r in near)
    assert all(math.isfinite(float(r["psnr"])) or float(r["mse"]) == 0 for r in near)


@pytest.mark.parametrize("damage", ["swap", "truncate", "delete"])
def test_damaged_bitstream_fails_without_output(dataset: Path, tmp_path: Path, damage: str):
    out_dir = tmp_path / "bits"
    timings = tmp_path / "timings.csv"
    metrics = tmp_path / "metrics.csv"
    encode_shard(dataset, 0, 1, "jpegls", {}, 0, out_dir, timings)
    target = out_dir / "p3.hsic"
    if damage == "swap":
        shutil.copyfile(out_dir / "p2.hsic", target)
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    else:
        target.unlink()
    with pytest.raises(HsicompError) as info:
        verify_shard(dataset, 0, 1, out_dir, timings, "toy", "jpegls", "none", 0, {}, PEAK,
                     metrics)
    message = str(info.value)
    assert "p3.hsic" in message and "jpegls" in message and "delta=0" in message
    assert "\n" not in message
    assert not metrics.exists()
    assert list(tmp_path.glob(".metrics.csv*")) == []


def test_wrong_delta_is_reported(dataset: Path, tmp_path: Path):
    encode_shard(dataset, 1, 2, "jpegls", {}, 2, tmp_path / "bits", tmp_path / "t.csv")
    with pytest.raises(HsicompError, match="delta=0 .*header says delta=2"):
        verify_shard(dataset, 1, 2, tmp_path / "bits", tmp_path / "t.csv", "toy", "jpegls",
                     "none", 0, {}, PEAK, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_unsupported_delta_is_rejected(dataset: Path, tmp_path: Path):
    with pytest.raises(HsicompError, match="jpegxl.*delta=3"):
        encode_shard(dataset, 0, 1, "jpegxl", {}, 3, tmp_path / "bits", tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


def test_shards_partition_test_patches(dataset: Path, tmp_path: Path):
    records = read_manifest(dataset)
    test_ids = sorted(r.patch_id for r in records if r.split == "test")
    shards = 3
    seen = []
    for k in range(shards):
        encode_shard(dataset, k, shards, "raw", {}, 0, tmp_path / "bits", tmp_path / f"t{k}.csv")
        seen += [t["patch_id"] for t in _read_csv(tmp_path / f"t{k}.csv")]
    assert sorted(seen) == test_ids
    assert len(seen) == len(set(seen))
    assert sorted(p.stem for p in (tmp_path / "bits").glob("*.hsic")) == test_ids


def _metric_row(dataset: str, codec: str, delta: int, patch: str, n_bytes: int, mse: float,
                max_err: int, ok: bool = True) -> dict:
    samples = math.prod(SHAPE)
    psnr = "inf" if mse == 0 else repr(10 * math.log10(PEAK**2 / mse))
    return {"dataset": dataset, "codec": codec, "model": "none", "delta": delta,
            "lossy": "false", "patch_id": patch, "bands": SHAPE[0], "rows": SHAPE[1],
            "cols": SHAPE[2],
            "bytes": n_bytes, "bpppc": 8 * n_bytes / samples, "mse": mse, "psnr": psnr,
            "mae": mse / 2, "max_abs_error": max_err, "sam_deg": 0.5 if mse else 0.0,
            "encode_s": 0.5, "decode_s": 0.25, "roundtrip_ok": "true" if ok else "false"}


def _write_metrics(path: Path, rows: list[dict]) -> None:
    """Write the metrics CSV, and beside it a bitstream of each row's size that it records."""
    for row in rows:
        data = bytes(range(256)) * (row["bytes"] // 256) + bytes(row["bytes"] % 256)
        bits = path.parent / "bits" / f"{row['codec']}-{row['delta']}-{row['patch_id']}.hsic"
        bits.parent.mkdir(exist_ok=True)
        bits.write_bytes(data)
        row.update(file=str(bits), sha256=hashlib.sha256(data).hexdigest())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PATCH_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_aggregate_two_shards(tmp_path: Path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _write_metrics(a, [_metric_row("toy", "jpegls", 2, "p3", 200, 1.0, 2),
                       _metric_row("toy", "jpegls", 0, "p1", 300, 0.0, 0)])
    _write_metrics(b, [_metric_row("toy", "jpegls", 2, "p1", 100, 3.0, 1),
                       _metric_row("toy", "jpegls", 0, "p3", 500, 0.0, 0, ok=False)])
    rd, per_patch = tmp_path / "rd.csv", tmp_path / "per_patch.csv"
    aggregate([a, b], rd, per_patch)

    patches = _read_csv(per_patch)
    assert [(r["delta"], r["patch_id"]) for r in patches] == \
        [("0", "p1"), ("0", "p3"), ("2", "p1"), ("2", "p3")]
    rows = _read_csv(rd)
    assert [r["delta"] for r in rows] == ["0", "2"]
    lossless, near = rows
    samples = math.prod(SHAPE)
    assert int(lossless["total_samples"]) == 2 * samples
    assert int(lossless["total_bytes"]) == 800
    assert float(lossless["bpppc"]) == pytest.approx(8 * 800 / (2 * samples), rel=1e-5)
    assert lossless["psnr"] == "inf" and lossless["mean_psnr"] == "inf"
    assert lossless["all_ok"] == "false"
    assert float(near["bpppc"]) == pytest.approx(8 * 300 / (2 * samples), rel=1e-5)
    assert float(near["mean_bpppc"]) == pytest.approx(8 * 300 / (2 * samples), rel=1e-5)
    assert float(near["mse"]) == pytest.approx(2.0)
    assert float(near["psnr"]) == pytest.approx(10 * math.log10(PEAK**2 / 2.0), rel=1e-5)
    mean_psnr = (10 * math.log10(PEAK**2 / 1.0) + 10 * math.log10(PEAK**2 / 3.0)) / 2
    assert float(near["mean_psnr"]) == pytest.approx(mean_psnr, rel=1e-5)
    assert int(near["max_abs_error"]) == 2 and near["all_ok"] == "true"
    assert int(near["patches"]) == 2 and int(near["bands"]) == SHAPE[0]
    assert float(near["encode_samples_per_s"]) == pytest.approx(2 * samples / 1.0, rel=1e-5)
    assert float(near["decode_samples_per_s"]) == pytest.approx(2 * samples / 0.5, rel=1e-5)


def test_aggregate_rejects_duplicate_patch(tmp_path: Path):
    a = tmp_path / "a.csv"
    _write_metrics(a, [_metric_row("toy", "raw", 0, "p1", 100, 0.0, 0)])
    with pytest.raises(HsicompError, match="more than once"):
        aggregate([a, a], tmp_path / "rd.csv", tmp_path / "pp.csv")
    assert not (tmp_path / "rd.csv").exists()


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_aggregate_refuses_a_bitstream_that_changed_since_verified(tmp_path: Path, damage):
    a = tmp_path / "a.csv"
    _write_metrics(a, [_metric_row("toy", "jpegls", 0, "p1", 300, 0.0, 0),
                       _metric_row("toy", "jpegls", 0, "p2", 200, 0.0, 0)])
    rd, per_patch = tmp_path / "rd.csv", tmp_path / "pp.csv"
    aggregate([a], rd, per_patch)
    assert [r["total_bytes"] for r in _read_csv(rd)] == ["500"]
    target = tmp_path / "bits" / "jpegls-0-p2.hsic"
    stat = target.stat()
    data = bytearray(target.read_bytes())
    if damage == "delete":
        target.unlink()
    elif damage == "truncate":
        target.write_bytes(data[:-1])
    else:  # same size and modification time, one byte changed
        data[100] ^= 0x01
        target.write_bytes(data)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    expected = {"delete": f"{target}: bitstream missing (verified in {a})",
                "truncate": f"{target}: 199 bytes, 200 when verified in {a}",
                "flip": f"{target}: not the file verified in {a} (sha256 differs)"}[damage]
    assert one_line_error(aggregate, [a], rd, per_patch) == expected
    # the tables of the earlier run are not left describing other files
    assert not rd.exists() and not per_patch.exists()


def test_aggregate_names_metrics_without_checksums(tmp_path: Path, capsys):
    a = tmp_path / "a.csv"
    _write_metrics(a, [_metric_row("toy", "jpegls", 0, "p1", 300, 0.0, 0)])
    rows = _read_csv(a)
    with open(a, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PATCH_COLUMNS[:-2], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    rd = tmp_path / "rd.csv"
    assert main(["aggregate", str(a), "--rd", str(rd), "--per-patch", str(tmp_path / "pp")]) == 2
    assert capsys.readouterr().err == (f"hsicomp: error: {a}: metrics without bitstream "
                                       "checksums (written by an older hsicomp): verify the "
                                       "shard again\n")


def test_pipeline_cli_and_plot(dataset: Path, tmp_path: Path):
    work = tmp_path / "work"
    metric_csvs = []
    for codec, delta in [("jpegls", 0), ("jpegls", 2), ("jpegls", 4), ("jpegxl", 0)]:
        bits, timings, out = work / f"{codec}{delta}", work / f"{codec}{delta}.t.csv", \
            work / f"{codec}{delta}.m.csv"
        common = ["--manifest", str(dataset), "--shard", "0", "--shards", "1", "--codec", codec,
                  "--params", "{}", "--delta", str(delta), "--timings", str(timings)]
        assert main(["encode-shard", *common, "--out-dir", str(bits), "--threads", "1"]) == 0
        assert main(["verify-shard", *common, "--bitstreams", str(bits), "--dataset", "toy",
                     "--model", "none", "--peak", str(PEAK), "--out", str(out)]) == 0
        metric_csvs.append(str(out))
    rd, pp = work / "rd.csv", work / "pp.csv"
    assert main(["aggregate", *metric_csvs, "--rd", str(rd), "--per-patch", str(pp)]) == 0
    assert len(_read_csv(rd)) == 4
    png, pdf = tmp_path / "fig" / "rd.png", tmp_path / "fig" / "rd.pdf"
    assert main(["plot-rd", str(rd), "--png", str(png), "--pdf", str(pdf)]) == 0
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000
    first = pdf.read_bytes()
    plot_rd(rd, png, pdf)
    assert pdf.read_bytes() == first


def test_cli_reports_bad_params(dataset: Path, tmp_path: Path, capsys):
    code = main(["encode-shard", "--manifest", str(dataset), "--shard", "0", "--shards", "1",
                 "--codec", "raw", "--params", "[1]", "--delta", "0", "--out-dir",
                 str(tmp_path / "b"), "--timings", str(tmp_path / "t.csv")])
    assert code == 2
    assert "JSON object" in capsys.readouterr().err


def test_error_above_delta_is_reported(dataset: Path, tmp_path: Path, monkeypatch):
    encode_shard(dataset, 0, 2, "jpegls", {}, 2, tmp_path / "bits", tmp_path / "t.csv")
    coder = evaluate.get_codec("jpegls", {})
    honest_decode = coder.decode

    def bad_decode(data: bytes, source: str = "input") -> np.ndarray:
        cube = honest_decode(data, source).astype(np.int64)
        cube[1, 2, 3] += 3 if cube[1, 2, 3] < 4000 else -3
        cube[1, 2, 3] = np.clip(cube[1, 2, 3], 0, PEAK)
        return cube.astype(np.uint16)

    coder.decode = bad_decode
    monkeypatch.setattr(evaluate, "get_codec", lambda name, params: coder)
    with pytest.raises(HsicompError, match=r"p0\.hsic: jpegls delta=2 decoded max error \d > 2"):
        verify_shard(dataset, 0, 2, tmp_path / "bits", tmp_path / "t.csv", "toy", "jpegls",
                     "none", 2, {}, PEAK, tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()


def test_label_names_the_csv_codec_column_and_errors(dataset: Path, tmp_path: Path, capsys):
    bits, timings, out = tmp_path / "bits", tmp_path / "t.csv", tmp_path / "m.csv"
    common = ["--manifest", str(dataset), "--shard", "0", "--shards", "2", "--codec", "jpegls",
              "--label", "ls-near", "--params", "{}", "--delta", "2", "--timings", str(timings)]
    assert main(["encode-shard", *common, "--out-dir", str(bits)]) == 0
    assert main(["verify-shard", *common, "--bitstreams", str(bits), "--dataset", "toy",
                 "--model", "-", "--peak", str(PEAK), "--out", str(out)]) == 0
    assert "ls-near (jpegls) delta=2" in capsys.readouterr().err
    rows = _read_csv(out)
    assert {(r["codec"], r["model"]) for r in rows} == {("ls-near", "-")}
    (bits / "p3.hsic").unlink()
    with pytest.raises(HsicompError, match=r"p3\.hsic: ls-near \(jpegls\) delta=2 bitstream"):
        verify_shard(dataset, 0, 2, bits, timings, "toy", "jpegls", "-", 2, {}, PEAK,
                     tmp_path / "m2.csv", label="ls-near")
    with pytest.raises(HsicompError, match=r"codec lossless \(jpegxl\) does not support"):
        encode_shard(dataset, 0, 1, "jpegxl", {}, 3, tmp_path / "b2", tmp_path / "t2.csv",
                     label="lossless")
    with pytest.raises(HsicompError, match=r"codec entry lw: .*coder must be one of"):
        encode_shard(dataset, 0, 1, "linerwkv", {"coder": "zip"}, 0, tmp_path / "b3",
                     tmp_path / "t3.csv", label="lw")


def test_plot_has_one_curve_per_codec_and_model(tmp_path: Path):
    from hsicomp.evaluation.rd_table import rd_series, read_rd, series_label

    assert series_label("linerwkv-arith", "XS") == "linerwkv-arith XS"
    assert series_label("jpegls", "-") == "jpegls"
    rd = tmp_path / "rd.csv"
    rows = [("jpegls", "-", 2, 5.0, 80.0)]
    rows += [(c, m, d, b, p) for c in ("linerwkv-ccsds", "linerwkv-arith")
             for m, b in (("S", 4.0), ("XS", 4.5))
             for d, p in ((0, math.inf), (1, 85.0), (5, 75.0))]
    with open(rd, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "codec", "model", "delta", "bpppc", "psnr"])
        writer.writerows(("toy", c, m, d, b - d / 10, p) for c, m, d, b, p in rows)
    assert rd_series(read_rd(rd)) == ["jpegls", "linerwkv-arith XS", "linerwkv-arith S",
                                       "linerwkv-ccsds XS", "linerwkv-ccsds S"]
    png = tmp_path / "rd.png"
    plot_rd(rd, png)
    assert png.stat().st_size > 1000


def test_shard_commands_show_progress_per_patch(dataset: Path, tmp_path: Path, capsys):
    """encode-shard and verify-shard show a bar over the patches; --no-progress hides it."""
    bits, timings, out = tmp_path / "bits", tmp_path / "t.csv", tmp_path / "m.csv"
    common = ["--manifest", str(dataset), "--shard", "0", "--shards", "1", "--codec", "jpegls",
              "--delta", "0", "--timings", str(timings)]
    verify = ["--bitstreams", str(bits), "--dataset", "toy", "--model", "-",
              "--peak", str(PEAK), "--out", str(out)]
    assert main(["encode-shard", *common, "--out-dir", str(bits)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"encode jpegls d0: 100%.* (\d+)/\1 ", err), err
    assert main(["verify-shard", *common, *verify]) == 0
    err = capsys.readouterr().err
    assert re.search(r"verify jpegls d0: 100%.* (\d+)/\1 ", err), err
    assert main(["encode-shard", *common, "--out-dir", str(bits), "--no-progress"]) == 0
    assert main(["verify-shard", *common, *verify, "--no-progress"]) == 0
    assert "%" not in capsys.readouterr().err
