"""The Snakemake workflow: lint, dry runs, a tiny end-to-end run, DVC round trip."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import (
    REPO,
    TINY_CONFIG,
    dvc,
    git,
    read_csv,
    run_snakemake,
    tool_env,
    write_config,
)

TINY = TINY_CONFIG


def test_lint_has_no_errors(tmp_path):
    proc = run_snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_are_snakefmt_clean():
    """`make lint` checks the formatting of the Snakefile and rules with snakefmt."""
    cmd = [str(Path(sys.executable).parent / "snakefmt"), "--check", "Snakefile", "rules"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hyspecnet_dry_run_without_data(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(REPO / "config" / "hyspecnet.yaml"))
    out = proc.stdout + proc.stderr
    for rule in ("download_archive", "extract_archive", "prepare_dataset", "train",
                 "encode_shard", "verify_shard", "aggregate", "plot_rd"):
        assert rule in out
    for rule in FIGURE_RULES:
        assert re.search(rf"{rule}\s+1\n", out)
    assert "hyspecnet-11k-splits.tar.gz" in out
    # 11 archives; per 32 shards, encoded and verified: the anchors at 9 + 1 + 1 + 12 + 9
    # deltas, 2 linerwkv coders x 4 sizes x 9 deltas, gdn at 5 lambdas,
    # gdn-gain at 9 levels, gdn-ohm at 5 fractions and coolchic at 4 lambdas:
    # (32 + 72 + 5 + 9 + 5 + 4) x 32 = 4064
    assert re.search(r"download_archive\s+11\n", out)
    assert re.search(r"encode_shard\s+4064\n", out)
    assert re.search(r"verify_shard\s+4064\n", out)
    assert not re.search(r"\btrain\s+\d+\n", out)  # the released LineRWKV weights:
    assert re.search(r"fetch_release\s+4\n", out)  # XS, S, M and L fetched by DVC
    assert re.search(r"import_release\s+4\n", out)  # and converted
    assert re.search(r"train_gdn\s+5\n", out)  # one per lambda
    assert re.search(r"train_gdn_curve\s+2\n", out)  # gdn-gain and gdn-ohm: one model each
    assert re.search(r"total\s+8176\n", out)
    # the documented job count is this one
    assert "8,176 jobs" in (REPO / "docs" / "workflow.md").read_text()
    assert not (tmp_path / "downloads").exists()


def test_default_config_dry_run(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", "-p", "results/rd_all.csv")
    out = proc.stdout + proc.stderr
    assert "prepare_dataset" in out
    # 1 shard x (anchors: 4 + 1 + 1 + 12 + 2 deltas; linerwkv: 2 coders x 1 size x 3 deltas;
    # gdn: 3 lambdas, one point each; gdn-gain and gdn-ohm: 5 points of one model each;
    # coolchic: 3 lambdas; klt 4 points, jpegxl-lossy, avif and jpeg2000-lossy 3 each)
    assert re.search(r"encode_shard\s+55\n", out)
    assert '--params \'{"iterations": 200, "lam": 0.03, "threads": 1}\'' in out
    assert re.search(r"train\s+1\n", out)
    assert re.search(r"train_gdn\s+3\n", out)
    assert re.search(r"train_gdn_curve\s+2\n", out)
    assert '--params \'{"fraction": 0.25, "model": "models/synthetic/gdn-ohm-gdn-ohm.pt"' in out
    assert "results/metrics/synthetic/gdn-gain/g0.5/d0/shard0.csv" in out
    assert ("python -m hsicomp train-gdn --data data/synthetic"
            " --out models/synthetic/gdn-gain-gdn-gain.pt") in out
    assert '"lambdas": [0.1, 1.0, 10.0]' in out
    assert '--params \'{"level": 1.5, "model": "models/synthetic/gdn-gain-gdn-gain.pt"' in out
    assert "results/metrics/synthetic/gdn/l0.1/d0/shard0.csv" in out
    assert ("python -m hsicomp train-gdn --data data/synthetic"
            " --out models/synthetic/gdn-gdn-l1.pt") in out
    assert "results/metrics/synthetic/linerwkv-ccsds/XS/d40/shard0.csv" in out
    assert "--codec linerwkv --label linerwkv-arith" in out
    assert '"model": "models/synthetic/linerwkv-XS.pt", "threads": 2' in out


FIGURE_RULES = ("bdrate", "plot_rate_error", "plot_lossless", "band_rates", "plot_band_rates",
                "error_image", "spectral_signature")


def test_default_config_dry_run_of_the_figures(tmp_path):
    """The one-patch figures read the band bits and bitstreams of evaluated points."""
    proc = run_snakemake(tmp_path, "-n", "--cores", "2", "-p")
    out = proc.stdout + proc.stderr
    for rule in FIGURE_RULES:
        assert re.search(rf"{rule}\s+1\n", out)
    assert ("python -m hsicomp bdrate results/rd_all.csv --reference ccsds123 --reference klt"
            " --reference jpegxl-lossy --reference avif --reference jpeg2000-lossy"
            " --metric psnr --metric sam --out results/bdrate.csv") in out
    assert "python -m hsicomp band-rates --manifest data/synthetic/manifest.csv" in out
    assert ('"linerwkv-ccsds": {"files": ["results/bitstreams/synthetic/linerwkv-ccsds/XS/d0/'
            'shard0.band_bits.csv"], "model": "XS"}') in out
    assert ("--bitstreams results/bitstreams/synthetic/ccsds123/-/d10/shard0 --codec ccsds123"
            " --label ccsds123 --params '{}' --delta 10  --peak 16383") in out
    for name in ("rate_max_error", "lossless_rates", "band_rates", "error_image"):
        assert f"results/figures/{name}.pdf" in out


def test_config_mistakes_fail_the_dry_run(tmp_path):
    """A configuration the plan refuses stops `snakemake -n` with its one-line message."""
    cfg = write_config(tmp_path / "c.yaml", {**TINY, "codecs": {"jpeg-ls": {}}})
    proc = run_snakemake(tmp_path, "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    assert "codecs.jpeg-ls: no codec of that name (did you mean 'jpegls'?" in (
        proc.stdout + proc.stderr)
    assert not (tmp_path / "results").exists()


def test_entry_sizes_and_references_in_the_plan(tmp_path):
    """A linerwkv entry's own sizes, released weights (fetched and converted, nothing
    trained) and the reference comparison, in a dry run."""
    config = dict(TINY, evaluation={"shards": 1}, deltas=[0],
                  codecs={"jpegls": {}, "net": {"codec": "linerwkv", "sizes": ["S"]},
                          "lms": {"codec": "linerwkv-lms"}},
                  linerwkv={"weights": "release", "sizes": ["XS", "S"]},
                  references={"anchor": {"compare": ["lms"],
                                         "rates": {"tiny": {"*": {0: 6.0}}}}})
    proc = run_snakemake(tmp_path, "-n", "--configfile",
                         str(write_config(tmp_path / "c.yaml", config)))
    out = proc.stdout + proc.stderr
    assert re.search(r"encode_shard\s+4\n", out)  # jpegls, net S, lms XS and S
    assert "results/bitstreams/tiny/net/S/d0/shard0" in out
    assert "results/bitstreams/tiny/net/XS" not in out
    assert re.search(r"fetch_release\s+2\n", out) and re.search(r"import_release\s+2\n", out)
    assert not re.search(r"\btrain\s+\d+\n", out)
    assert re.search(r"compare_references\s+1\n", out)


def test_tiny_workflow_end_to_end(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    run_snakemake(tmp_path, "--cores", "2", "results/rd_all.csv", "results/figures/rd_psnr.png",
                  "--configfile", str(cfg))
    rd = read_csv(tmp_path / "results" / "rd_all.csv")
    assert [(r["codec"], r["delta"]) for r in rd] == [("jpeg2000", "0"), ("jpegls", "0"),
                                                     ("jpegls", "2")]
    assert all(r["all_ok"] == "true" and r["patches"] == "3" for r in rd)
    per_patch = read_csv(tmp_path / "results" / "per_patch.csv")
    assert len(per_patch) == 9
    for row in per_patch:
        shard = next(s for s in range(2)
                     if (tmp_path / "results" / "bitstreams" / "tiny" / row["codec"] / "-"
                         / f"d{row['delta']}" / f"shard{s}" / f"{row['patch_id']}.hsic").exists())
        size = (tmp_path / "results" / "bitstreams" / "tiny" / row["codec"] / "-"
                / f"d{row['delta']}" / f"shard{shard}" / f"{row['patch_id']}.hsic").stat().st_size
        assert int(row["bytes"]) == size
        assert int(row["max_abs_error"]) <= int(row["delta"])
    assert (tmp_path / "results" / "figures" / "rd_psnr.png").stat().st_size > 1000
    nothing = run_snakemake(tmp_path, "-n", "results/rd_all.csv", "--configfile", str(cfg))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr
    # the report says which configuration and PSNR peak produced the table and the figure
    run_snakemake(tmp_path, "results/rd_all.csv", "results/figures/rd_psnr.png", "--report",
                  "report.zip", "--configfile", str(cfg))
    import zipfile

    with zipfile.ZipFile(tmp_path / "report.zip") as z:
        text = "".join(z.read(n).decode("utf-8", "replace") for n in z.namelist()
                       if n.endswith((".html", ".js")))
    assert f"Configuration: {cfg}. PSNR peak per dataset: tiny 16383." in text


def _bitstreams(work: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted((work / "results" / "bitstreams").rglob("*.hsic"))}


def _assert_tables_match_the_files(work: Path) -> None:
    """rd_all.csv and per_patch.csv describe the bitstreams on disk, every row all_ok."""
    rd = read_csv(work / "results" / "rd_all.csv")
    assert [(r["codec"], r["delta"], r["patches"], r["all_ok"]) for r in rd] == [
        ("jpeg2000", "0", "3", "true"), ("jpegls", "0", "3", "true"), ("jpegls", "2", "3", "true")]
    per_patch = read_csv(work / "results" / "per_patch.csv")
    assert len(per_patch) == 9
    for row in per_patch:
        data = (work / row["file"]).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(row["bytes"]), row["sha256"])
    for r in rd:
        assert int(r["total_bytes"]) == sum(int(p["bytes"]) for p in per_patch
                                            if (p["codec"], p["delta"]) == (r["codec"], r["delta"]))


def _flip_a_byte(path: Path, keep_mtime: bool = False) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(data)
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_results_never_outlive_their_bitstreams(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    target = ("--cores", "2", "results/rd_all.csv", "--configfile", str(cfg))
    run_snakemake(tmp_path, *target)
    original = _bitstreams(tmp_path)
    bits = tmp_path / "results" / "bitstreams" / "tiny"
    deleted = bits / "jpegls" / "-" / "d0" / "shard0" / "synth-test-0000.hsic"
    truncated = bits / "jpegls" / "-" / "d2" / "shard1" / "synth-test-0001.hsic"
    corrupted = bits / "jpeg2000" / "-" / "d0" / "shard0" / "synth-test-0002.hsic"
    untouched = sorted((bits / "jpegls" / "-" / "d0" / "shard1").glob("*.hsic"))
    mtimes = [p.stat().st_mtime_ns for p in untouched]
    deleted.unlink()
    truncated.write_bytes(truncated.read_bytes()[:-7])
    _flip_a_byte(corrupted)

    dry = run_snakemake(tmp_path, "-n", *target[2:])
    out = dry.stdout + dry.stderr
    for path in (deleted, truncated, corrupted):
        assert str(path.relative_to(tmp_path)) in out
    assert re.search(r"invalidate_shards\s+1\n", out)
    proc = run_snakemake(tmp_path, *target)
    # only the three damaged shards are encoded again
    assert len(re.findall(r"rule encode_shard:", proc.stdout + proc.stderr)) == 3
    assert _bitstreams(tmp_path) == original  # encoded again: the same bytes
    assert [p.stat().st_mtime_ns for p in untouched] == mtimes
    _assert_tables_match_the_files(tmp_path)

    # every bitstream and metrics file of one codec deleted (folders and timings kept)
    for path in (bits / "jpeg2000").rglob("*.hsic"):
        path.unlink()
    for path in (tmp_path / "results" / "metrics" / "tiny" / "jpeg2000").rglob("*.csv"):
        path.unlink()
    run_snakemake(tmp_path, *target)
    assert _bitstreams(tmp_path) == original
    _assert_tables_match_the_files(tmp_path)

    # a change that keeps size and modification time is found when aggregate runs: it fails
    # naming the file and removes rd_all.csv; the next run encodes that shard again
    hidden = bits / "jpegls" / "-" / "d2" / "shard0" / "synth-test-0000.hsic"
    _flip_a_byte(hidden, keep_mtime=True)
    proc = run_snakemake(tmp_path, *target, "--forcerun", "aggregate", check=False)
    assert proc.returncode != 0
    assert (f"hsicomp: error: {hidden.relative_to(tmp_path)}: not the file verified in "
            f"results/metrics/tiny/jpegls/-/d2/shard0.csv (sha256 differs)") in (
        proc.stdout + proc.stderr)
    assert not (tmp_path / "results" / "rd_all.csv").exists()
    run_snakemake(tmp_path, *target)
    assert _bitstreams(tmp_path) == original
    _assert_tables_match_the_files(tmp_path)
    nothing = run_snakemake(tmp_path, "-n", *target[2:])
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


TINY_LINERWKV = dict(
    TINY,
    codecs={
        "jpegls": {"deltas": [0]},
        "linerwkv-arith": {"codec": "linerwkv", "params": {"coder": "arith"}, "deltas": [0]},
        "linerwkv-ccsds": {"codec": "linerwkv", "params": {"coder": "sample-adaptive"},
                           "deltas": [2], "threads": 2},
    },
    evaluation={"shards": 1},
    linerwkv={"train_dataset": "tiny", "sizes": ["XS"], "threads": 1,
              "settings": {"epochs": 1, "batch": 1, "band_window": 4, "pos_size": 4,
                           "checkpoint_every": 1}},
)


def test_tiny_workflow_with_linerwkv(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", TINY_LINERWKV)
    run_snakemake(tmp_path, "--cores", "2", "results/rd_all.csv", "results/figures/rd_psnr.png",
                  "--configfile", str(cfg))
    rd = read_csv(tmp_path / "results" / "rd_all.csv")
    assert [(r["codec"], r["model"], r["delta"]) for r in rd] == [
        ("jpegls", "-", "0"), ("linerwkv-arith", "XS", "0"), ("linerwkv-ccsds", "XS", "2")]
    assert all(r["all_ok"] == "true" and r["patches"] == "3" for r in rd)
    per_patch = read_csv(tmp_path / "results" / "per_patch.csv")
    assert len(per_patch) == 9
    assert all(r["roundtrip_ok"] == "true" for r in per_patch)
    assert all(int(r["max_abs_error"]) <= int(r["delta"]) for r in per_patch)
    bits = tmp_path / "results" / "bitstreams" / "tiny"
    assert len(list((bits / "linerwkv-ccsds" / "XS" / "d2" / "shard0").glob("*.hsic"))) == 3
    log = (tmp_path / "logs" / "encode" / "tiny" / "linerwkv-ccsds" / "XS" / "d2"
           / "shard0.log").read_text()
    assert "linerwkv-ccsds (linerwkv)" in log
    assert (tmp_path / "results" / "figures" / "rd_psnr.png").stat().st_size > 1000
    nothing = run_snakemake(tmp_path, "-n", "results/rd_all.csv", "--configfile", str(cfg))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


def test_dvc_push_pull_round_trip_leaves_nothing_to_do(tmp_path):
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    cfg = write_config(tmp_path / "tiny.yaml", TINY)
    run_snakemake(project, "--cores", "1", "data", "--configfile", str(cfg))
    dvc(project, "add", "-q", "data")
    dvc(project, "remote", "add", "-d", "local", str(remote))
    dvc(project, "push", "-q")
    shutil.rmtree(project / "data")
    shutil.rmtree(project / ".dvc" / "cache")
    dvc(project, "pull", "-q")
    assert (project / "data" / "tiny" / "manifest.csv").is_file()
    run_snakemake(project, "--cores", "1", "--touch", "data", "--configfile", str(cfg))
    proc = run_snakemake(project, "-n", "data", "--configfile", str(cfg))
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert "up to date" in dvc(project, "status")


def test_committed_data_dvc_matches_regenerated_default_dataset(tmp_path):
    """Regenerating the default dataset reproduces the hash recorded in data.dvc."""
    committed = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    run_snakemake(project, "--cores", "2", "data")
    dvc(project, "add", "-q", "data")
    regenerated = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]
    assert regenerated == committed


def hyspecnet_config(server, tmp_path: Path, md5s: dict[str, str]) -> Path:
    config = {
        "datasets": {"hsn": {
            "kind": "hyspecnet", "download": True, "root": "downloads/hsn",
            "base_url": server.url(""), "archives": md5s, "split": "hard",
            "max_patches": {"train": 1, "val": 1, "test": 2}, "bands": "enmap202",
            "bit_depth": 14, "retries": 1}},
        "codecs": {"jpegls": {"deltas": [0, 3]}},
        "evaluation": {"shards": 1},
    }
    return write_config(tmp_path / "hsn.yaml", config)


def test_hyspecnet_download_prepare_and_evaluate(server, tmp_path):
    from hyspecnet_fixture import build_hyspecnet_archives, build_hyspecnet_tree

    build_hyspecnet_tree(tmp_path / "src", tiles=2, patches_per_tile=3)
    md5s = build_hyspecnet_archives(tmp_path / "src", server.root, parts=2)
    work = tmp_path / "work"
    work.mkdir()
    run_snakemake(work, "--cores", "2", "results/rd_all.csv", "--configfile",
                  str(hyspecnet_config(server, tmp_path, md5s)))
    assert sorted(path for path, _ in server.requests) == sorted(f"/{name}" for name in md5s)
    manifest = read_csv(work / "data" / "hsn" / "manifest.csv")
    assert [r["split"] for r in manifest] == ["train", "val", "test", "test"]
    assert all(r["bands"] == "202" for r in manifest)
    # the fixture's tiles hold negatives, values above 14 bits and nodata pixels
    assert sum(int(r["clipped_low"]) for r in manifest) > 0
    assert sum(int(r["clipped_high"]) for r in manifest) > 0
    assert sum(int(r["nodata"]) for r in manifest) > 0
    rd = read_csv(work / "results" / "rd_all.csv")
    assert [(r["delta"], r["patches"], r["all_ok"]) for r in rd] == [("0", "2", "true"),
                                                                     ("3", "2", "true")]
    # the address, retries and bounds of the downloads do not change what they produce
    changed = yaml.safe_load((tmp_path / "hsn.yaml").read_text())
    changed["datasets"]["hsn"] |= {"download_deadline": 99, "max_extracted_bytes": 10**9,
                                   "retries": 3, "base_url": server.url("") + "mirror/"}
    dry = run_snakemake(work, "-n", "results/rd_all.csv", "--configfile",
                        str(write_config(tmp_path / "hsn2.yaml", changed)))
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout + dry.stderr


def test_hyspecnet_md5_mismatch_fails_the_download_job(server, tmp_path):
    from hyspecnet_fixture import build_hyspecnet_archives, build_hyspecnet_tree

    build_hyspecnet_tree(tmp_path / "src", tiles=2, patches_per_tile=2)
    md5s = build_hyspecnet_archives(tmp_path / "src", server.root, parts=1)
    md5s["hyspecnet-11k-01.tar.gz"] = "0" * 32
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "--cores", "1", "data", "--configfile",
                         str(hyspecnet_config(server, tmp_path, md5s)), check=False)
    assert proc.returncode != 0
    log = (work / "logs" / "download" / "downloads" / "hsn" / "hyspecnet-11k-01.tar.gz.log")
    assert "md5 mismatch" in log.read_text()
    assert not list((work / "downloads" / "hsn" / "archives").glob("hyspecnet-11k-01*"))


def test_train_rule_writes_model_log_and_curve(tmp_path):
    config = dict(TINY, linerwkv={
        "train_dataset": "tiny", "sizes": ["XS"], "threads": 1,
        "settings": {"epochs": 2, "batch": 1, "band_window": 4, "pos_size": 4,
                     "checkpoint_every": 1}})
    cfg = write_config(tmp_path / "train.yaml", config)
    run_snakemake(tmp_path, "--cores", "1", "models/tiny/linerwkv-XS.pt", "--configfile",
                  str(cfg))
    from hsicomp.models.checkpoint import load_model

    model, data = load_model(tmp_path / "models" / "tiny" / "linerwkv-XS.pt")
    assert data["metadata"]["steps"] == 2
    assert (tmp_path / "models" / "tiny" / "linerwkv-XS.loss.png").is_file()
    assert (tmp_path / "logs" / "benchmarks" / "train" / "tiny" / "XS.tsv").is_file()
    assert not (tmp_path / "models" / "tiny" / "linerwkv-XS.pt.state").exists()
    proc = run_snakemake(tmp_path, "-n", "models/tiny/linerwkv-XS.pt", "--configfile", str(cfg))
    assert "Nothing to be done" in proc.stdout + proc.stderr


TINY_GDN = dict(
    TINY,
    codecs={"jpegls": {"deltas": [0, 2]},
            "gdn": {"codec": "gdn", "lambdas": [1, 100], "preset": "tiny",
                    "settings": {"epochs": 2, "batch": 1, "crop": 8}},
            "gain": {"codec": "gdn-gain", "lambdas": [1, 100], "levels_eval": [0, 0.5, 1],
                     "settings": {"epochs": 2, "batch": 1, "crop": 8}},
            "ohm": {"codec": "gdn-ohm", "lambdas": [1, 100], "fractions_eval": [0, 1],
                    "settings": {"epochs": 2, "batch": 1, "crop": 8, "ohm_symbols": 4}},
            "cc": {"codec": "coolchic", "lambdas": [1, 0.01], "params": {"iterations": 5}},
            "klt": {"points": [400, 100]}},
    evaluation={"shards": 1},
    figures={"reference": "jpegls", "error_image": {"codec": "gdn"}},
)


def test_tiny_workflow_with_gdn(tmp_path):
    cfg = write_config(tmp_path / "tiny.yaml", TINY_GDN)
    run_snakemake(tmp_path, "--cores", "2", "results/rd_all.csv", "results/bdrate.csv",
                  "results/figures/rd_psnr.png", "results/figures/lossless_rates.png",
                  "results/figures/rate_max_error.png", "results/figures/error_image.png",
                  "results/figures/spectral_signature.png", "--configfile", str(cfg))
    rd = read_csv(tmp_path / "results" / "rd_all.csv")
    assert [(r["codec"], r["model"], r["delta"], r["lossy"]) for r in rd] == [
        ("cc", "l0.01", "", "true"), ("cc", "l1", "", "true"),
        ("gain", "g0", "", "true"), ("gain", "g0.5", "", "true"), ("gain", "g1", "", "true"),
        ("gdn", "l1", "", "true"), ("gdn", "l100", "", "true"),
        ("jpegls", "-", "0", "false"), ("jpegls", "-", "2", "false"),
        ("klt", "s100", "", "true"), ("klt", "s400", "", "true"),
        ("ohm", "f0", "", "true"), ("ohm", "f1", "", "true")]
    assert all(r["all_ok"] == "true" and r["patches"] == "3" for r in rd)
    for row in read_csv(tmp_path / "results" / "per_patch.csv"):
        if row["codec"] in ("gdn", "gain", "ohm", "cc"):
            path = (tmp_path / "results" / "bitstreams" / "tiny" / row["codec"] / row["model"]
                    / "d0"
                    / "shard0" / f"{row['patch_id']}.hsic")
            assert int(row["bytes"]) == path.stat().st_size
            assert row["delta"] == "" and row["lossy"] == "true"
    assert (tmp_path / "models" / "tiny" / "gdn-gdn-l100.pt").is_file()
    assert (tmp_path / "models" / "tiny" / "gdn-gain-gain.pt").is_file()
    assert (tmp_path / "models" / "tiny" / "gdn-ohm-ohm.pt").is_file()
    bd = read_csv(tmp_path / "results" / "bdrate.csv")
    curves = [("cc", "l0.01+l1"), ("gain", "g0+g0.5+g1"), ("gdn", "l1+l100"), ("jpegls", "-"),
              ("klt", "s100+s400"), ("ohm", "f0+f1")]
    # every curve against the reference and the lossy anchor, at equal PSNR and SAM
    assert [(r["reference"], r["metric"], r["codec"], r["model"]) for r in bd] == [
        (ref, metric, *curve) for ref in ("jpegls", "klt") for metric in ("psnr", "sam")
        for curve in curves]
    assert (tmp_path / "results" / "figures" / "spectral_signature.png").stat().st_size > 1000
    assert (tmp_path / "results" / "figures" / "error_image.png").stat().st_size > 1000
    nothing = run_snakemake(tmp_path, "-n", "results/rd_all.csv", "--configfile", str(cfg))
    assert "Nothing to be done" in nothing.stdout + nothing.stderr


FAKE_CONDA = """#!/bin/sh
# Answers the three questions Snakemake asks conda before it plans a run.
case "$1" in
  --version) echo "conda 24.7.1" ;;
  info) echo '{"conda_version": "24.7.1", "platform": "linux-64", "envs_dirs": [],
               "pkgs_dirs": [], "root_prefix": "/nonexistent",
               "conda_prefix": "/nonexistent", "active_prefix": null}' ;;
  config) echo '{"get": {"channel_priority": "strict"}}' ;;
  *) echo "conda $* is not available here" >&2; exit 1 ;;
esac
"""


def test_conda_deployment_parses_and_plans(tmp_path, monkeypatch):
    """--sdm conda: the rules' shell prefix parses and every job gets the project environment.

    Conda itself cannot be installed on the test machines; a stand-in answers the version and
    configuration queries so that Snakemake gets as far as planning the jobs.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "conda").write_text(FAKE_CONDA)
    (bin_dir / "conda").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, "--sdm", "conda", "-n", "--cores", "1", "results/rd_all.csv")
    out = proc.stdout + proc.stderr
    assert re.search(r"encode_shard\s+55\n", out)
    assert "envs/hsicomp.yaml will be created" in out
    config = write_config(tmp_path / "cpu.yaml", {**TINY, "conda_env": "hsicomp-cpu"})
    proc = run_snakemake(work, "--sdm", "conda", "-n", "--cores", "1", "--configfile", str(config))
    assert "envs/hsicomp-cpu.yaml will be created" in proc.stdout + proc.stderr


def test_conda_environments_pin_what_requirements_lock_pins():
    """Every pip pin of envs/*.yaml is the version requirements.lock installs."""
    lock = dict(line.lower().split("==")
                for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    for path in sorted((REPO / "envs").glob("*.yaml")):
        env = yaml.safe_load(path.read_text())
        pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
        pins = [item for item in pip if not item.startswith("-")]
        assert pins, path
        for pin in pins:
            name, version = pin.split("==")
            assert lock[name.lower()] == version.removesuffix("+cpu"), f"{path.name}: {pin}"


def test_schema_codec_names_are_the_registry():
    """The workflow checks codec names against the schema's list: it must be the registry."""
    from hsicomp.codecs.base import available_codecs

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["$defs"]["codec_name"]["enum"] == available_codecs()


def test_touch_pulled_fails_on_missing_files_and_then_marks_them_current(tmp_path):
    """`make pull`'s last step names what the configuration still lacks, touching nothing."""
    cfg = write_config(tmp_path / "c.yaml", TINY)
    work = tmp_path / "work"
    work.mkdir()
    make = ["make", "-s", "-C", str(REPO), "touch-pulled", f"WORKDIR={work}", f"CONFIG={cfg}"]
    proc = subprocess.run(make, capture_output=True, text=True, env=tool_env())
    assert proc.returncode != 0
    assert "missing: data/tiny/manifest.csv" in proc.stdout
    assert "file(s) the configuration needs are not there" in proc.stderr
    assert not (work / "data").exists()
    run_snakemake(work, "data", "--cores", "1", "--configfile", str(cfg))
    os.utime(work / "data" / "tiny" / "manifest.csv", (1, 1))  # as if pulled: older than inputs
    proc = subprocess.run(make, capture_output=True, text=True, env=tool_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_snakemake(work, "data", "models", "-n", "--configfile", str(cfg))
    assert "prepare_dataset" not in proc.stdout + proc.stderr  # the touched data are current


def test_workflow_runs_as_a_module_of_another_workflow(tmp_path):
    """`module hsicomp: snakefile: ...` in another project: config, schema and rules resolve
    from this checkout, the host's configuration replaces the built-in default."""
    write_config(tmp_path / "config.yaml", {**TINY, "codecs": {"jpegls": {"deltas": [0]}}})
    (tmp_path / "Snakefile").write_text(
        'configfile: "config.yaml"\n\n'
        "module hsicomp:\n"
        f"    snakefile: {str(REPO / 'Snakefile')!r}\n"
        "    config: config\n\n"
        "use rule * from hsicomp as hsicomp_*\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "results/rd_all.csv"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=tool_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = read_csv(tmp_path / "results" / "rd_all.csv")
    assert {(r["dataset"], r["codec"], r["delta"]) for r in rows} == {("tiny", "jpegls", "0")}
    assert not (tmp_path / "data" / "synthetic").exists()  # the default dataset is not used
