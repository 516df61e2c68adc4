"""LineRWKV training: recipe, resumability, outputs, model files and checkpoint import."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from hsicomp.data.datasets import prepare
from hsicomp.errors import HsicompError
from hsicomp.models import LineRWKV
from hsicomp.models.checkpoint import import_checkpoint, load_model, model_hash, save_model
from hsicomp.training.linerwkv import LineRWKVTrainer, LineRWKVTrainSettings, laplace_bits

TINY = {"size": "XS", "epochs": 2, "samples_per_epoch": 4, "batch": 2, "band_window": 6,
        "pos_size": 8, "threads": 1, "checkpoint_every": 2, "seed": 3, "log_every": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ds")
    prepare({"kind": "synthetic", "seed": 1, "bands": 10, "rows": 12, "cols": 12,
             "bit_depth": 14, "patches": {"train": 3, "val": 1, "test": 0}}, folder,
            progress=False)
    return folder


def train(dataset, out, stop_after=None, **overrides):
    trainer = LineRWKVTrainer(dataset, out,
                              LineRWKVTrainSettings.from_dict({**TINY, **overrides}),
                              progress=False)
    trainer.run(stop_after=stop_after)
    return trainer


def test_training_writes_model_log_and_curve(dataset, tmp_path):
    trainer = train(dataset, tmp_path / "xs.pt")
    assert trainer.total_steps == 4
    model, data = load_model(tmp_path / "xs.pt")
    assert data["size"] == "XS" and data["metadata"]["steps"] == 4
    assert sum(p.numel() for p in model.parameters()) == 30466
    with open(tmp_path / "xs.log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    validated = [r for r in rows if r["val_l1"] != "nan"]
    assert [int(r["step"]) for r in validated] == [2, 4]
    assert all(float(r["val_l1"]) > 0 and float(r["val_bits"]) > 0 for r in validated)
    assert (tmp_path / "xs.loss.png").stat().st_size > 1000
    # training changed the weights
    assert model_hash(model) != model_hash(LineRWKV.from_size("XS"))


def test_interrupted_training_continues_to_the_same_weights(dataset, tmp_path):
    whole = train(dataset, tmp_path / "a.pt")
    first = train(dataset, tmp_path / "b.pt", stop_after=1)
    assert first.step == 1 and not (tmp_path / "b.pt").exists()
    assert (tmp_path / "b.pt.state").is_file()
    second = train(dataset, tmp_path / "b.pt")
    assert second.step == 4
    a, _ = load_model(tmp_path / "a.pt")
    b, _ = load_model(tmp_path / "b.pt")
    assert model_hash(a) == model_hash(b) == model_hash(whole.model)


def test_changed_settings_start_again(dataset, tmp_path, capsys):
    train(dataset, tmp_path / "m.pt", stop_after=1)
    trainer = train(dataset, tmp_path / "m.pt", lr_start=1e-3)
    assert "settings changed" in capsys.readouterr().out
    assert trainer.step == trainer.total_steps


def test_kill_9_then_rerun_resumes(dataset, tmp_path):
    settings = json.dumps({**TINY, "epochs": 400, "checkpoint_every": 1})
    cmd = [sys.executable, "-m", "hsicomp", "train", "--data", str(dataset),
           "--out", str(tmp_path / "k.pt"), "--no-progress", "--settings", settings]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = tmp_path / "k.pt.state"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run([*cmd, "--stop-after", "1"], capture_output=True, text=True,
                           timeout=120, check=True)
    match = re.search(r"resuming k\.pt at step (\d+)/800", rerun.stdout)
    assert match and int(match.group(1)) > 0, rerun.stdout + rerun.stderr


def test_rate_objective_is_bits(dataset, tmp_path):
    trainer = train(dataset, tmp_path / "r.pt", objective="rate")
    with open(tmp_path / "r.log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # bits per sample of residuals of 14-bit data: positive and well below 16
    assert all(0 < float(r["train_loss"]) < 16 for r in rows)
    assert trainer.step == 4


def test_laplace_bits_sum_to_one_probability():
    r = torch.arange(-200, 201, dtype=torch.float64)
    p = torch.exp2(-laplace_bits(r, torch.tensor(5.0, dtype=torch.float64)))
    assert abs(float(p.sum()) - 1.0) < 1e-6
    assert float(laplace_bits(torch.tensor(0.0), torch.tensor(5.0))) < 4


def test_learning_rate_schedule_and_groups(dataset, tmp_path):
    trainer = LineRWKVTrainer(dataset, tmp_path / "s.pt", LineRWKVTrainSettings.from_dict(TINY),
                              progress=False)
    assert trainer.lr_at(0) == pytest.approx(5e-4)
    assert trainer.lr_at(trainer.total_steps - 1) == pytest.approx(1e-6)
    factors = sorted(g["lr_factor"] for g in trainer.optimizer.param_groups)
    assert factors == [1.0, 2.0, 3.0]


def test_bad_settings_are_one_line_errors(dataset, tmp_path):
    with pytest.raises(HsicompError, match="unknown training settings: nope"):
        LineRWKVTrainSettings.from_dict({"nope": 1})
    with pytest.raises(HsicompError, match="fewer than band_window"):
        LineRWKVTrainer(dataset, tmp_path / "x.pt",
                        LineRWKVTrainSettings.from_dict({**TINY, "band_window": 99}))


def test_import_released_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = LineRWKV.from_size("S")
    torch.save(model.state_dict(), tmp_path / "release.pth")
    assert import_checkpoint(tmp_path / "release.pth", tmp_path / "s.pt") == "S"
    loaded, data = load_model(tmp_path / "s.pt")
    assert data["size"] == "S"
    assert model_hash(loaded) == model_hash(model)
    first = (tmp_path / "s.pt").read_bytes()
    import_checkpoint(tmp_path / "release.pth", tmp_path / "s.pt")
    assert (tmp_path / "s.pt").read_bytes() == first  # same input, same bytes


def test_import_rejects_foreign_or_mismatched_files(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(HsicompError, match="junk.pth"):
        import_checkpoint(tmp_path / "junk.pth", tmp_path / "o.pt")
    sd = LineRWKV.from_size("XS").state_dict()
    sd.pop("decoder.conv_out.bias")
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(HsicompError, match="do not match"):
        import_checkpoint(tmp_path / "partial.pth", tmp_path / "o.pt")
    save_model(tmp_path / "ok.pt", LineRWKV.from_size("XS"), "XS")
    with pytest.raises(HsicompError, match="not an hsicomp model file"):
        load_model(tmp_path / "partial.pth")
