"""The lossy gdn codec, its training command, and lossy points in verify/aggregate/figures."""

from __future__ import annotations

import csv
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    GDN_BIT_DEPTH,
    GDN_SHAPE,
    gdn_test_config,
    random_gdn_model_file,
    smooth_cube,
)
from helpers import one_line_error as _error
from helpers import prepare_synthetic as _prepare

from hsicomp import cli
from hsicomp.codecs import get_codec
from hsicomp.entropy.factorized import decode_latents
from hsicomp.evaluation.aggregate import aggregate
from hsicomp.evaluation.bdrate import bdrate_table
from hsicomp.evaluation.metrics import compare
from hsicomp.evaluation.rd_table import read_rd
from hsicomp.evaluation.shards import encode_shard, verify_shard
from hsicomp.figures.plots import plot_lossless, plot_rd
from hsicomp.io.bsq import read_bsq, write_bsq
from hsicomp.io.container import FLAG_LOSSY, pack, unpack
from hsicomp.io.manifest import PatchRecord, write_manifest
from hsicomp.models.checkpoint import load_gdn_model, model_hash
from hsicomp.training.gdn import GdnTrainer, GdnTrainSettings

torch.set_num_threads(1)
SHAPE = GDN_SHAPE
BIT_DEPTH = GDN_BIT_DEPTH
SMALL = gdn_test_config()


def _model_file(path: Path, seed: int) -> Path:
    return random_gdn_model_file(path, SMALL, seed)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("gdn-models")
    return _model_file(folder / "a.pt", 0), _model_file(folder / "b.pt", 1)


@pytest.fixture(scope="module")
def cube() -> np.ndarray:
    return smooth_cube(SHAPE, BIT_DEPTH, 7)


def test_decoder_matches_the_network_and_latents_round_trip(models, cube):
    codec = get_codec("gdn", {"model": str(models[0])})
    data = codec.encode(cube, 0, BIT_DEPTH)
    assert codec.encode(cube, 0, BIT_DEPTH) == data
    header, side, payload = unpack(data)
    assert header.lossy and header.flags == FLAG_LOSSY and header.delta == 0
    model, _ = load_gdn_model(models[0])
    x = model.normalize(torch.from_numpy(cube.astype(np.float32))[None])
    with torch.no_grad():
        y = torch.round(model.analyse(x))[0].to(torch.int64).numpy()
        expected = model.denormalize(model(x).x_hat)[0].numpy()
    assert side[1:33] == bytes.fromhex(model_hash(model))
    latents = decode_latents(payload, model.latent_shape(13, 19), model.entropy.tables())
    assert np.array_equal(latents, y)
    decoded = codec.decode(data)
    assert decoded.dtype == np.uint16 and decoded.shape == SHAPE
    expected = np.clip(np.rint(expected), 0, (1 << BIT_DEPTH) - 1)
    assert np.abs(decoded - expected).max() <= 1 and (decoded == expected).mean() > 0.99
    assert compare(cube, decoded, 4095.0)["max_abs_error"] > 0  # lossy


def test_rate_is_the_file_size_and_info_shows_lossy(models, cube, tmp_path, capsys):
    np.save(tmp_path / "c.npy", cube)
    out = tmp_path / "c.hsic"
    assert cli.main(["encode", str(tmp_path / "c.npy"), str(out), "--codec", "gdn", "--model",
                     str(models[0]), "--bit-depth", str(BIT_DEPTH)]) == 0
    assert f"{out.stat().st_size} bytes" in capsys.readouterr().out
    assert cli.main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "lossy: yes" in info and "latent_shape: 4x4x5" in info and "flags: 0x8000" in info
    assert "(CRC-32 of the decoded symbols, verified on decode)" in info
    assert cli.main(["decode", str(out), str(tmp_path / "d.npy"), "--model",
                     str(models[0])]) == 0
    assert np.load(tmp_path / "d.npy").shape == SHAPE


def test_bad_input_and_files_are_one_line_errors(models, cube):
    codec = get_codec("gdn", {"model": str(models[0])})
    data = codec.encode(cube, 0, BIT_DEPTH)
    assert "is lossy" in _error(codec.encode, cube, 1, BIT_DEPTH)
    assert "cube has 6 bands" in _error(codec.encode, smooth_cube((6, 8, 8), 12, 1), 0, 12)
    assert "needs a model file" in _error(get_codec("gdn").encode, cube, 0, BIT_DEPTH)
    other = get_codec("gdn", {"model": str(models[1])})
    assert "coded with model" in _error(other.decode, data, "f.hsic")
    assert "give that model file" in _error(get_codec("gdn").decode, data, "f.hsic")
    for bad in (data[:-9], data[:40], data[:-30] + bytes([data[-30] ^ 4]) + data[-29:],
                b"not an hsic file"):
        _error(codec.decode, bad, "f.hsic")
    header, side, payload = unpack(data)
    header.flags = 0
    assert "lossy flag missing" in _error(codec.decode, pack(header, side, payload), "f.hsic")
    jpegls = get_codec("jpegls").encode(cube, 0, BIT_DEPTH)
    assert "written by codec 'jpegls'" in _error(codec.decode, jpegls, "f.hsic")
    header, side, payload = unpack(jpegls)
    header.flags = FLAG_LOSSY
    assert "lossy flag set" in _error(get_codec("jpegls").decode, pack(header, side, payload),
                                      "f.hsic")
    header, side, payload = unpack(data)
    bad_side = side[:-1] + bytes([side[-1] + 1])  # latent width off by one
    assert "corrupt header" in _error(codec.decode, pack(header, bad_side, payload), "f.hsic")
    body = bytearray(data[:-4])
    body[21:25] = struct.pack("<I", 3)  # delta 3 with the lossy flag (magic..cols: 21 bytes)
    assert "lossy file with delta 3" in _error(
        unpack, bytes(body) + struct.pack("<I", zlib.crc32(bytes(body))), "f.hsic")


def _dataset(root: Path, cubes: list[np.ndarray]) -> Path:
    records = []
    for i, c in enumerate(cubes):
        sha = write_bsq(root / f"p{i}.bsq", c)
        records.append(PatchRecord(f"p{i}", "test", *c.shape, BIT_DEPTH, f"p{i}.bsq", 0, 0, 0,
                                   sha))
    write_manifest(root / "manifest.csv", records)
    return root / "manifest.csv"


def test_verify_shard_measures_lossy_files_without_an_error_bound(models, tmp_path):
    manifest = _dataset(tmp_path / "data", [smooth_cube(SHAPE, BIT_DEPTH, s) for s in (2, 3)])
    params = {"model": str(models[0])}
    assert "lossy codec: delta 0" in _error(encode_shard, manifest, 0, 1, "gdn", params, 2,
                                            tmp_path / "b2", tmp_path / "t2.csv")
    encode_shard(manifest, 0, 1, "gdn", params, 0, tmp_path / "bits", tmp_path / "t.csv",
                 band_bits_csv=tmp_path / "bands.csv")
    # a transform codec attributes no bits to bands: the band-bits file has no rows
    assert (tmp_path / "bands.csv").read_text() == "patch_id,band,bits\n"
    rows = verify_shard(manifest, 0, 1, tmp_path / "bits", tmp_path / "t.csv", "toy", "gdn",
                        "l1", 0, params, 4095.0, tmp_path / "m.csv")
    assert [(r["delta"], r["lossy"]) for r in rows] == [("", True), ("", True)]
    assert all(r["max_abs_error"] > 0 and math.isfinite(r["psnr"]) for r in rows)
    assert all(r["bytes"] == (tmp_path / "bits" / f"{r['patch_id']}.hsic").stat().st_size
               for r in rows)
    aggregate([tmp_path / "m.csv"], tmp_path / "rd.csv", tmp_path / "pp.csv")
    with open(tmp_path / "rd.csv", newline="") as f:
        rd = list(csv.DictReader(f))
    assert [(r["codec"], r["model"], r["delta"], r["lossy"], r["all_ok"]) for r in rd] == [
        ("gdn", "l1", "", "true", "true")]
    # a near-lossless file under a lossy codec's name is refused, and the other way round
    jpegls = get_codec("jpegls").encode(read_bsq(tmp_path / "data" / "p0.bsq", *SHAPE), 0, 12)
    (tmp_path / "bits" / "p0.hsic").write_bytes(jpegls)
    assert "says not lossy" in _error(verify_shard, manifest, 0, 1, tmp_path / "bits",
                                      tmp_path / "t.csv", "toy", "gdn", "l1", 0, params, 4095.0,
                                      tmp_path / "m2.csv")


def _rd_file(path: Path) -> Path:
    rows = [("ccsds123", "-", "0", "false", 4.0, "inf"), ("ccsds123", "-", "2", "false", 2.5, 50),
            ("ccsds123", "-", "5", "false", 1.9, 46),
            ("ccsds123", "-", "10", "false", 1.5, 42), ("ccsds123", "-", "40", "false", 1.0, 35),
            ("gdn", "l0.1", "", "true", 0.3, 33),
            ("gdn", "l1", "", "true", 0.5, 36), ("gdn", "l3", "", "true", 0.8, 40),
            ("gdn", "l10", "", "true", 1.2, 44),
            ("gdn", "l100", "", "true", 2.0, 48), ("gdn", "l1000", "", "true", 3.0, 52)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "codec", "model", "delta", "lossy", "bpppc", "psnr",
                    "max_abs_error"])
        w.writerows([("toy", *r, 9) for r in rows])
    return path


def test_lossy_points_make_one_curve_and_are_not_lossless(tmp_path):
    rd = _rd_file(tmp_path / "rd.csv")
    rows = read_rd(rd)
    assert {r["series"] for r in rows} == {"ccsds123", "gdn"}
    assert all(r["delta"] is None for r in rows if r["lossy"])
    table = bdrate_table(rows, "ccsds123", rd)
    assert [(r["codec"], r["model"], r["points"]) for r in table] == [
        ("ccsds123", "-", 4), ("gdn", "l0.1+l1+l10+l100+l1000+l3", 6)]
    assert table[1]["bd_rate_percent"] < 0
    plot_rd(rd, tmp_path / "rd.png")
    plot_lossless(rd, tmp_path / "lossless.png")
    only_lossy = tmp_path / "lossy.csv"
    only_lossy.write_text("".join(line for line in rd.read_text().splitlines(keepends=True)
                                  if "ccsds123" not in line))
    assert "no lossless" in _error(plot_lossless, only_lossy, tmp_path / "x.png")


def test_training_is_deterministic_resumable_and_loadable(tmp_path, capsys):
    data = _prepare(tmp_path, {"seed": 1, "bands": 6, "rows": 12, "cols": 12, "bit_depth": 12,
                               "patches": {"train": 2, "val": 1, "test": 1}})
    settings = {"epochs": 2, "samples_per_epoch": 4, "batch": 2, "crop": 8, "seed": 3,
                "lmbda": 2.0, "threads": 1, "log_every": 1}
    first = tmp_path / "a.pt"
    assert cli.main(["train-gdn", "--data", str(data), "--out", str(first), "--settings",
                     json.dumps(settings), "--no-progress"]) == 0
    model, info = load_gdn_model(first)
    assert info["metadata"]["steps"] == 4 and info["metadata"]["lambda"] == 2.0
    assert model.config.bands == 6 and model.entropy.frozen
    assert not first.with_name("a.pt.state").exists()
    log = first.with_suffix(".log.csv").read_text().splitlines()
    assert len(log) == 5 and log[0].startswith("step,epoch,lr,train_loss,train_bps")
    assert cli.main(["model-info", str(first)]) == 0
    info_text = capsys.readouterr().out
    assert "model: gdn transform codec" in info_text and "lambda: 2.0" in info_text
    assert f"weights_sha256: {model_hash(model)}" in info_text
    second = tmp_path / "b.pt"
    trainer = GdnTrainer(data, second, GdnTrainSettings.from_dict(settings), progress=False)
    trainer.run(stop_after=1)
    assert not second.exists() and second.with_name("b.pt.state").exists()
    GdnTrainer(data, second, GdnTrainSettings.from_dict(settings), progress=False).run()
    assert model_hash(load_gdn_model(second)[0]) == model_hash(model)
    assert "unknown gdn preset" in _error(GdnTrainSettings.from_dict, {"preset": "huge"})
    assert "unknown gdn training settings: size" in _error(GdnTrainSettings.from_dict,
                                                           {"size": "XS"})
