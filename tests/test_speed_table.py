"""benchmarks/speed_table.py: multiply-add formulas and one tiny end-to-end run (no timings)."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from helpers import REPO

from hsicomp.models import SIZES
from hsicomp.models.gdn import PRESETS

sys.path.insert(0, str(REPO / "benchmarks"))
import speed_table  # noqa: E402


@pytest.mark.parametrize("size", sorted(SIZES))
def test_linerwkv_macs_match_flop_counter(size: str) -> None:
    config = SIZES[size]
    for shape in ((5, 4, 8), (2, 3, 5)):
        assert speed_table.linerwkv_macs(config, shape) == speed_table.torch_macs(config, shape)
    bands, rows, cols = 5, 4, 8
    extra = bands * cols * config.n_lines * 7 * config.width ** 2
    assert speed_table.linerwkv_macs(config, (bands, rows, cols), decoder=True) \
        == speed_table.linerwkv_macs(config, (bands, rows, cols)) + extra


def test_ccsds123_macs_count_weights() -> None:
    params = {"mode": "full", "P": 3}
    # bands 0..4 use 3, 4, 5, 6, 6 weights; 2 x 3 - 1 predicted samples each; x2 (update)
    assert speed_table.ccsds123_macs(params, (5, 2, 3)) == 2 * 24 * 5
    assert speed_table.ccsds123_macs({"mode": "reduced", "P": 2}, (3, 2, 2)) == 2 * 3 * 3
    # the second stage: nine more weights per band
    assert speed_table.ccsds123_macs({"mode": "reduced", "P": 2, "cascade": 5}, (3, 2, 2)) \
        == 2 * (3 + 27) * 3


def test_tiny_run_writes_csv(tmp_path) -> None:
    out = tmp_path / "speed.csv"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed_table.py"), "--codecs",
                    "raw", "jpegls", "--deltas", "0", "2", "--rows", "4", "--cols", "16",
                    "--bands", "3", "--repeats", "1", "--out", str(out)],
                   check=True, capture_output=True, cwd=tmp_path)
    rows = list(csv.DictReader(out.open()))
    assert [(r["label"], r["delta"]) for r in rows] == [("raw", "0"), ("jpegls", "0"),
                                                        ("jpegls", "2")]
    assert rows[0]["cube_rows_cols_bands"] == "4x16x3"
    assert rows[0]["bpppc"] and float(rows[0]["peak_encode_mib"]) > 0
    assert rows[1]["macs_per_sample"] == "n/a"


def test_linerwkv_lms_macs_add_the_predictor() -> None:
    config = SIZES["XS"]
    shape = (5, 4, 8)
    entry = {"codec": "linerwkv-lms", "config": config}
    samples = 5 * 4 * 8
    lms = speed_table.ccsds123_macs({"mode": "full", "P": 3, "cascade": 5}, shape,
                                    extra_weights=1)
    assert speed_table.macs(entry, shape) == (
        f"{(speed_table.linerwkv_macs(config, shape) + lms) / samples:.1f}",
        f"{(speed_table.linerwkv_macs(config, shape, decoder=True) + lms) / samples:.1f}")


def test_gdn_ohm_macs_add_the_one_hot_max_convs(tmp_path) -> None:
    shape = (6, 16, 16)
    plain = speed_table.gdn_macs(speed_table.gdn_model_file("gdn", "tiny", 6, tmp_path), shape)
    ohm = speed_table.gdn_macs(speed_table.gdn_model_file("gdn-ohm", "tiny", 6, tmp_path), shape)
    config = PRESETS["tiny"]
    positions = (16 // config.downsampling) ** 2
    extra = config.latent_channels ** 2 * speed_table.OHM_SYMBOLS * positions
    assert ohm == (plain[0] + extra, plain[1] + extra)
