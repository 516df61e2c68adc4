"""Rate-distortion points of the learned lossy codecs after short CPU training runs.

Trains the small gdn models (three lambdas), one gdn-gain model (levels 0..2) and one
gdn-ohm model (fractions 0..1) on a synthetic dataset, fits coolchic at three lambdas, and
prints (bits per sample, PSNR) for every point together with whether each curve is
monotone (rate and PSNR both rising along the rate knob). Every file is decoded.

These are learned outcomes: the trained weights, hence the points, depend on the CPU's
floating-point summation order (vector width, thread count), so a curve that is monotone
on one machine may have a kink on another. That is why this is a report and not a test.

    python benchmarks/short_training_rd.py        # writes benchmarks/out/short_training_rd.csv
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import machine, write_rows

from hsicomp.codecs import Codec, get_codec
from hsicomp.data.datasets import prepare
from hsicomp.evaluation.metrics import compare
from hsicomp.io.bsq import read_bsq
from hsicomp.io.manifest import read_manifest
from hsicomp.training.gdn import GdnTrainer, GdnTrainSettings

DATASET = {"kind": "synthetic", "seed": 2, "bands": 8, "rows": 32, "cols": 32,
           "bit_depth": 12, "patches": {"train": 4, "val": 1, "test": 2}}
PEAK = 4095.0
SHORT = {"batch": 4, "crop": 16, "threads": 1, "seed": 0}


def rd_point(codec: Codec, data: Path) -> tuple[float, float]:
    """(bits per sample, PSNR of the pooled MSE) of ``codec`` on the test patches."""
    n_bytes = sse = samples = 0
    for rec in read_manifest(data / "manifest.csv"):
        if rec.split != "test":
            continue
        cube = read_bsq(data / rec.file, rec.bands, rec.rows, rec.cols)
        encoded = codec.encode(cube, 0, rec.bit_depth)
        m = compare(cube, codec.decode(encoded), PEAK)
        n_bytes += len(encoded)
        sse += m["mse"] * cube.size
        samples += cube.size
    return 8 * n_bytes / samples, float(10 * np.log10(PEAK**2 / (sse / samples)))


def train(data: Path, out: Path, settings: dict) -> Path:
    """A gdn model trained with ``settings`` (on top of SHORT) into ``out``."""
    GdnTrainer(data, out, GdnTrainSettings.from_dict({**SHORT, **settings}),
               progress=False).run()
    return out


def curves(data: Path, scratch: Path) -> dict[str, list[tuple[str, Codec]]]:
    """Every curve: a name and its (knob value, codec) points, in rising-rate order."""
    gdn = [(f"lambda={lam}", get_codec("gdn", {"model": str(train(
        data, scratch / f"gdn-{lam}.pt", {"epochs": 40, "lr_start": 5e-3, "lr_end": 5e-4,
                                          "lmbda": lam}))}))
           for lam in (0.03, 3.0, 300.0)]
    gain = train(data, scratch / "gain.pt", {"epochs": 300, "lr_start": 1e-2, "lr_end": 1e-3,
                                             "lambdas": [0.03, 3.0, 300.0]})
    ohm = train(data, scratch / "ohm.pt", {"epochs": 300, "lr_start": 1e-2, "lr_end": 1e-3,
                                           "ohm_symbols": 8, "ohm_min_channels": 1,
                                           "lambdas": [1.0, 300.0]})
    fast = {"iterations": 300, "lr": 0.03, "grids": 3, "channels": 2, "synth_hidden": 8,
            "threads": 1}
    return {
        "gdn": gdn,
        "gdn-gain": [(f"level={v}", get_codec("gdn-gain", {"model": str(gain), "level": v}))
                     for v in (0, 0.5, 1, 1.5, 2)],
        "gdn-ohm": [(f"fraction={v}", get_codec("gdn-ohm", {"model": str(ohm),
                                                            "fraction": v}))
                    for v in (0, 0.5, 1)],
        "coolchic": [(f"lam={v}", get_codec("coolchic", {**fast, "lam": v}))
                     for v in (1.0, 0.03, 0.001)],
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data = scratch / "data"
        prepare(DATASET, data, progress=False)
        for name, points in curves(data, scratch).items():
            values = [(knob, *rd_point(codec, data)) for knob, codec in points]
            rates, psnrs = [v[1] for v in values], [v[2] for v in values]
            monotone = rates == sorted(rates) and psnrs == sorted(psnrs)
            rows += [{"codec": name, "point": knob, "bits_per_sample": bps, "psnr_db": psnr,
                      "curve_monotone": monotone} for knob, bps, psnr in values]
    write_rows("short_training_rd", rows)


if __name__ == "__main__":
    main()
