"""Speed and complexity of every codec on one cube: samples/s, multiply-adds, peak memory.

    python benchmarks/speed_table.py [--models models/synthetic] [--sizes XS S M L]
        [--codecs jpegls ccsds123 linerwkv-arith ...] [--deltas 0] [--repeats 3]
        [--threads 0] [--quick] [--out results/speed.csv]

Cube: the synthetic ``generate_cube(0)`` scene, 128 rows x 128 columns x 202 bands, 14 bits
(``--quick``: 32 x 64 x 202; or ``--rows/--cols/--bands``). Per codec label, LineRWKV size
and delta, one fresh process encodes the cube ``--repeats`` times and another decodes the
file as often; each first codes a small crop (model loading and compiled code are not
timed). Speeds are samples / best wall-clock time; the decoded cube is checked against the
original (exact at delta 0, max error <= delta otherwise) and the rate is the whole .hsic
file. Peak memory is each process's peak resident set (VmHWM), nothing subtracted;
``idle_baseline_mib`` is that of a process that only imported the same modules.

Multiply-adds per sample are computed from the configuration: for LineRWKV those of the
dense layers (convolutions and linear layers, checked against torch's FlopCounterMode),
for ccsds123 those of the predictor, for the lossy gdn codecs those of the analysis
(encoder) and synthesis (decoder) convolutions as FlopCounterMode counts them; the per-band
2-D anchors report ``n/a``. LineRWKV models come from ``--models DIR``
(``linerwkv-<size>.pt``); sizes without a file there use random weights (same speed and
multiply-adds, meaningless rate). gdn, gdn-gain (level 1 of 3) and gdn-ohm (all channels
of 32 symbols) use a ``--gdn-preset`` network with random weights and frozen tables; being
lossy, their output is checked for shape only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from common import cpu, model_file, print_rows

from hsicomp.io.table import write_table

REPO = Path(__file__).resolve().parents[1]
#: Codec labels (as in config/config.yaml): (codec, parameters).
LABELS: dict[str, tuple[str, dict[str, Any]]] = {
    "raw": ("raw", {}),
    "jpegls": ("jpegls", {}),
    "jpeg2000": ("jpeg2000", {}),
    "jpegxl": ("jpegxl", {}),
    "ccsds123": ("ccsds123", {}),
    "ccsds123-arith": ("ccsds123", {"coder": "arith"}),
    "linerwkv-arith": ("linerwkv", {"coder": "arith"}),
    "linerwkv-ccsds": ("linerwkv", {"coder": "sample-adaptive"}),
    "linerwkv-lms": ("linerwkv-lms", {}),
    "gdn": ("gdn", {}),
    "gdn-gain": ("gdn-gain", {"level": 1.0}),
    "gdn-ohm": ("gdn-ohm", {"fraction": 1.0}),
    "coolchic": ("coolchic", {"lam": 0.03, "iterations": 1000, "threads": 1}),
}
MODEL_CODECS = {"linerwkv", "linerwkv-lms"}
GDN_CODECS = {"gdn", "gdn-gain", "gdn-ohm"}
#: Gain-unit levels of the gdn-gain model measured here.
GAIN_LEVELS = 3
#: One-Hot-Max symbols per channel of the gdn-ohm model measured here.
OHM_SYMBOLS = 32
NOTES = {
    "raw": "uncompressed 16-bit BSQ reference",
    "jpegls": "per-band 2-D codec (imagecodecs); multiply-adds not measurable",
    "ccsds123": "MACs: prediction dot product (3 + min(z, P) terms) + one power-of-two "
                "scaled weight update per weight; entropy coder not counted",
    "linerwkv": "MACs: convolutions and linear layers (torch FlopCounterMode agrees), "
                "element-wise ops and entropy coder not counted; the decoder also advances "
                "the line predictor on the last line",
}
NOTES["jpeg2000"] = NOTES["jpegxl"] = NOTES["jpegls"]
NOTES["gdn"] = ("lossy; MACs: convolutions of the analysis (encoder) and synthesis (decoder) "
                "transforms (torch FlopCounterMode), GDN and entropy coder not counted; "
                "random weights: rate meaningless")
NOTES["gdn-gain"] = NOTES["gdn"]
NOTES["gdn-ohm"] = ("lossy; MACs: as gdn, plus the One-Hot-Max 1x1 convs (candidates in the "
                    "encoder, dequantisation in the decoder); random weights: rate meaningless")
NOTES["coolchic"] = ("lossy; encoding trains the model on the cube (1,000 steps, the default "
                     "config), so its time grows with the steps; decoder MACs: fixed-point "
                     "ARM, bilinear upsampling and synthesis (hsicomp.models.coolchic."
                     "decoder_macs); encoder MACs not counted (each step runs the decoder's "
                     "float network forward and backward)")
NOTES["linerwkv-lms"] = ("MACs: those of linerwkv plus the ccsds123 predictor with one more "
                         "weight (the network's prediction) and its second stage")


# --------------------------------------------------------------------------- worker side


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM, else ru_maxrss)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; bytes on macOS
    return peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)


def _digest(value: bytes | np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(value) if isinstance(value, np.ndarray)
                          else value).digest()


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: ``idle``, ``encode`` or ``decode``.

    Returns the peak RSS and, when timing, the best wall-clock seconds and the CPU seconds
    of that run; every repeat must give the same output.
    """
    from hsicomp.codecs import get_codec

    codec = get_codec(spec["codec"], spec["params"])
    if spec["codec"] in MODEL_CODECS | GDN_CODECS:  # what the codec imports when it loads its model
        import hsicomp.models.checkpoint  # noqa: F401
        import hsicomp.models.kernel  # noqa: F401
    if spec["mode"] == "idle":
        return {"peak_mib": peak_rss_mib()}
    delta, depth = spec["delta"], spec["bit_depth"]
    if spec["mode"] == "encode":
        cube = np.load(spec["cube"])
        crop = np.ascontiguousarray(cube[:, :4, :16])  # all bands: gdn models need them
        Path(spec["warm"]).write_bytes(codec.encode(crop, delta, depth))

        def run() -> bytes:
            return codec.encode(cube, delta, depth)
    else:
        codec.decode(Path(spec["warm"]).read_bytes())
        data = Path(spec["data"]).read_bytes()

        def run() -> np.ndarray:
            return codec.decode(data)
    best = (float("inf"), 0.0)
    digest = out = None
    for _ in range(spec["repeats"]):
        out = None  # let the previous output go before the next run
        wall, cpu_s = time.perf_counter(), time.process_time()
        out = run()
        wall, cpu_s = time.perf_counter() - wall, time.process_time() - cpu_s
        best = min(best, (wall, cpu_s))
        if digest is None:
            digest = _digest(out)
        elif _digest(out) != digest:
            raise SystemExit(f"{spec['codec']} {spec['mode']}: output differs between runs")
    if spec["mode"] == "encode":
        Path(spec["data"]).write_bytes(out)
    else:
        np.save(spec["decoded"], out)
    return {"wall": best[0], "cpu": best[1], "peak_mib": peak_rss_mib()}


# --------------------------------------------------------------------------- multiply-adds


def linerwkv_macs(config: Any, shape: tuple[int, int, int], decoder: bool = False) -> int:
    """Multiply-adds of the dense layers predicting a (bands, rows, cols) cube.

    Encoder side (``LineRWKV.forward``, ``predict_cube``): the line encoder on every line, the
    line predictor on lines 0..T-2, the spectral predictor on bands 0..I-2 of lines 1..T-1,
    the decoders on lines 1..T-1. The decoder (``KernelStepper``) also runs the line predictor
    on the last line.
    """
    bands, rows, cols = shape
    f = config.width
    block = 7 * f * f  # TimeMix key, value, receptance, output; ChannelMix key, receptance, value
    encoder = bands * rows * cols * (3 * f + 3 * f * f * (config.n_enc - 1))
    lines = bands * (rows if decoder else rows - 1) * cols * config.n_lines * block
    spectral = (bands - 1) * (rows - 1) * cols * config.n_bands * block
    decoders = (rows - 1) * cols * ((bands - 1) * ((config.n_dec - 1) * f * f + f) + f)
    return encoder + lines + spectral + decoders


def torch_macs(config: Any, shape: tuple[int, int, int]) -> int:
    """Multiply-adds that torch's FlopCounterMode counts in one ``LineRWKV.forward``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hsicomp.models import LineRWKV

    model = LineRWKV(config).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros((1, *shape)))
    return counter.get_total_flops() // 2


def ccsds123_macs(params: dict[str, Any], shape: tuple[int, int, int],
                  extra_weights: int = 0) -> int:
    """Predictor multiply-adds of ccsds123 on a (bands, rows, cols) cube.

    Every sample but the first of each band: the dot product of the weights with the 3
    directional (full mode) and ``min(z, P)`` central local differences, then one weight
    update ``w += sign(e) u 2**-rho`` per weight; with the second stage (``cascade`` > 0)
    the same for its ``C_INPUTS`` weights.
    """
    from hsicomp.codecs.lms import C_INPUTS

    bands, rows, cols = shape
    directional = 3 if params["mode"] == "full" else 0
    weights = sum(directional + min(z, params["P"]) + extra_weights for z in range(bands))
    if params.get("cascade", 0):
        weights += bands * C_INPUTS
    return 2 * weights * (rows * cols - 1)


# --------------------------------------------------------------------------- driver


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; return its result."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{spec['codec']} {spec['mode']} failed (exit status "
                         f"{proc.returncode}):\n{proc.stdout[-2000:]}"
                         f"{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gdn_model_file(codec: str, preset: str, bands: int, scratch: Path) -> Path:
    """A ``preset`` gdn (gdn-gain, gdn-ohm) model with random weights (seed 0) and frozen
    tables."""
    path = scratch / f"random-{codec}-{preset}.pt"
    if not path.exists():
        import torch

        from hsicomp.models.checkpoint import save_gdn_model
        from hsicomp.models.gdn import PRESETS, TransformCodec

        levels = GAIN_LEVELS if codec == "gdn-gain" else 0
        torch.manual_seed(0)
        config = replace(PRESETS[preset].with_bands(bands), levels=levels)
        if codec == "gdn-ohm":
            config = config.with_ohm(OHM_SYMBOLS)
        model = TransformCodec(config).eval()
        model.entropy.freeze()
        save_gdn_model(path, model)
    return path


def gdn_macs(path: Path, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(analysis, synthesis) multiply-adds that FlopCounterMode counts on one cube."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hsicomp.models.checkpoint import load_gdn_model

    model, _ = load_gdn_model(path)
    ohm = model.config.ohm_symbols > 0
    x = torch.zeros((1, *shape))
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            y = model.analyse(x)
            if ohm:
                symbols = model.entropy.symbols_of(y)
        enc = counter.get_total_flops() // 2
        with FlopCounterMode(display=False) as counter:
            y_hat = model.entropy.dequantize(model.entropy.one_hot(symbols)) if ohm \
                else torch.round(y)
            model.synthesise(y_hat, shape[1], shape[2])
        dec = counter.get_total_flops() // 2
    return enc, dec


def entries(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """(label, codec, params, size, trained, model config) of every codec to measure."""
    from hsicomp.models.checkpoint import load_model

    out = []
    for label in args.codecs:
        codec, params = LABELS[label]
        if codec in GDN_CODECS:
            path = gdn_model_file(codec, args.gdn_preset, args.bands, scratch)
            out.append({"label": label, "codec": codec, "size": args.gdn_preset,
                        "trained": None, "config": None, "model_path": path,
                        "params": {**params, "model": str(path), "threads": 1}})
            continue
        if codec not in MODEL_CODECS:
            out.append({"label": label, "codec": codec, "params": params, "size": "-",
                        "trained": None, "config": None})
            continue
        for size in args.sizes:
            path, trained = model_file(size, args.models, scratch)
            out.append({"label": label, "codec": codec, "size": size, "trained": trained,
                        "params": {**params, "model": str(path), "threads": args.threads},
                        "config": load_model(path)[0].config})
    return out


def macs(entry: dict[str, Any], shape: tuple[int, int, int]) -> tuple[str, str]:
    """(encoder, decoder) multiply-adds per sample as text."""
    samples = shape[0] * shape[1] * shape[2]
    if entry["codec"] in MODEL_CODECS:
        enc = linerwkv_macs(entry["config"], shape)
        dec = linerwkv_macs(entry["config"], shape, decoder=True)
        if entry["codec"] == "linerwkv-lms":
            from hsicomp.codecs import get_codec
            from hsicomp.codecs.linerwkv_lms import LineRWKVLmsCodec

            params = {**get_codec("ccsds123", {}).params,
                      "cascade": LineRWKVLmsCodec.defaults["cascade"]}
            lms = ccsds123_macs(params, shape, extra_weights=1)
            enc, dec = enc + lms, dec + lms
    elif entry["codec"] == "ccsds123":
        from hsicomp.codecs import get_codec

        enc = dec = ccsds123_macs(get_codec("ccsds123", entry["params"]).params, shape)
    elif entry["codec"] in GDN_CODECS:
        enc, dec = gdn_macs(entry["model_path"], shape)
    elif entry["codec"] == "coolchic":
        from hsicomp.codecs import get_codec
        from hsicomp.models.coolchic import decoder_macs

        config, _ = get_codec("coolchic", entry["params"]).settings()
        return "n/a", f"{decoder_macs(config, *shape)['total']:.1f}"
    elif entry["codec"] == "raw":
        enc = dec = 0
    else:
        return "n/a", "n/a"
    return f"{enc / samples:.1f}", f"{dec / samples:.1f}"


def check_macs(entries_: list[dict[str, Any]]) -> None:
    """Compare the LineRWKV formula with torch's FlopCounterMode on a small cube."""
    for entry in entries_:
        if entry["config"] is not None:
            shape = (5, 4, 8)
            got, want = linerwkv_macs(entry["config"], shape), torch_macs(entry["config"], shape)
            if got != want:
                raise SystemExit(f"LineRWKV {entry['size']}: formula gives {got} multiply-adds, "
                                 f"FlopCounterMode {want}")


def measure(entry: dict[str, Any], delta: int, args: argparse.Namespace, cube: np.ndarray,
            tmp: Path, baseline: float) -> dict[str, Any]:
    """Encode and decode in fresh processes; check the result; return the row."""
    spec = {"codec": entry["codec"], "params": entry["params"], "delta": delta,
            "bit_depth": args.bit_depth, "repeats": args.repeats, "cube": str(tmp / "cube.npy"),
            "warm": str(tmp / "warm.hsic"), "data": str(tmp / "cube.hsic"),
            "decoded": str(tmp / "decoded.npy")}
    enc = run_worker({**spec, "mode": "encode"})
    dec = run_worker({**spec, "mode": "decode"})
    decoded = np.load(spec["decoded"])
    err = int(np.abs(decoded.astype(np.int64) - cube).max())
    # no maximum-error guarantee: shape checked only
    lossy = entry["codec"] in GDN_CODECS | {"coolchic"}
    if decoded.shape != cube.shape or (err > delta and not lossy):
        raise SystemExit(f"{entry['label']} {entry['size']} delta {delta}: max error {err}")
    bands, rows, cols = cube.shape
    threads = (f"{args.threads}/2" if entry["codec"] in MODEL_CODECS else "1/1")
    enc_macs, dec_macs = macs(entry, cube.shape)
    notes = NOTES[entry["codec"]]
    if entry["trained"] is False:
        notes += "; random weights: rate meaningless"
    return {
        "codec": entry["codec"], "label": entry["label"], "size": entry["size"],
        "cube_rows_cols_bands": f"{rows}x{cols}x{bands}", "bit_depth": args.bit_depth,
        "delta": delta, "threads": threads,
        "encode_samples_per_s": round(cube.size / enc["wall"]),
        "decode_samples_per_s": round(cube.size / dec["wall"]),
        "encode_cpu_per_wall": round(enc["cpu"] / enc["wall"], 2),
        "decode_cpu_per_wall": round(dec["cpu"] / dec["wall"], 2),
        "macs_per_sample": enc_macs, "decoder_macs_per_sample": dec_macs,
        "peak_encode_mib": round(enc["peak_mib"], 1), "peak_decode_mib": round(dec["peak_mib"], 1),
        "idle_baseline_mib": baseline,
        "bpppc": round(8 * Path(spec["data"]).stat().st_size / cube.size, 4),
        "repeats": args.repeats, "machine": cpu(), "notes": notes,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", nargs="+", choices=list(LABELS), default=list(LABELS))
    parser.add_argument("--sizes", nargs="+", choices=["XS", "S", "M", "L"],
                        default=["XS", "S", "M", "L"])
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with linerwkv-<size>.pt files (else random weights)")
    parser.add_argument("--deltas", nargs="+", type=int, default=[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs")
    parser.add_argument("--threads", type=int, default=0,
                        help="linerwkv encoder threads (0: every CPU this process may use)")
    parser.add_argument("--quick", action="store_true", help="32 x 64 x 202 cube")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--cols", type=int, default=None)
    parser.add_argument("--bands", type=int, default=202)
    parser.add_argument("--bit-depth", type=int, default=14)
    parser.add_argument("--gdn-preset", default="tiny", help="network preset of gdn codecs")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "speed.csv")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rows is None:
        args.rows = 32 if args.quick else 128
    if args.cols is None:
        args.cols = 64 if args.quick else 128
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from hsicomp.codecs import get_codec
    from hsicomp.models.kernel import default_threads

    if args.threads <= 0:
        args.threads = default_threads()
    from hsicomp.data.synthetic import generate_cube

    cube = generate_cube(0, bands=args.bands, rows=args.rows, cols=args.cols,
                         bit_depth=args.bit_depth)
    print(f"machine: {cpu()}; cube {args.rows}x{args.cols}x{args.bands} (rows x cols x bands); "
          f"best of {args.repeats}", flush=True)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        np.save(tmp / "cube.npy", cube)
        todo = entries(args, tmp)
        check_macs(todo)
        for entry in todo:
            if entry["codec"] not in baselines:
                idle = run_worker({"codec": entry["codec"], "params": entry["params"],
                                   "mode": "idle"})
                baselines[entry["codec"]] = round(idle["peak_mib"], 1)
            for delta in args.deltas:
                if not get_codec(entry["codec"], entry["params"]).supports(delta):
                    continue
                row = measure(entry, delta, args, cube, tmp, baselines[entry["codec"]])
                print(f"{row['label']} {row['size']} delta {delta}: encode "
                      f"{row['encode_samples_per_s']:,} / decode {row['decode_samples_per_s']:,} "
                      f"samples/s, peak {row['peak_encode_mib']} / {row['peak_decode_mib']} MiB "
                      f"(idle {row['idle_baseline_mib']}), {row['bpppc']} bpppc", flush=True)
                rows.append(row)
    if not rows:
        raise SystemExit("nothing measured")
    write_table(args.out, rows, list(rows[0]))
    print_rows([{k: v for k, v in row.items() if k not in ("machine", "notes")} for row in rows])
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
