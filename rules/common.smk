# Configuration loading and validation, and the helpers the rules share.

import csv
import hashlib
import json
import os
import re
import shlex
import sys
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import yaml
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import update_config, validate

# The checkout holding these rules: the workflow's own folder, also when another workflow
# uses it as a module (where workflow.basedir is that workflow's folder).
ROOT = Path(str(workflow.current_basedir)).parent
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
with open(SCHEMA) as _f:
    SCHEMA_DEFS = yaml.safe_load(_f)["$defs"]

if not workflow.config_settings.configfiles and "datasets" not in config:
    # The built-in default applies only when no configuration is given (a config file, or
    # the `config:` of a module declaration); --config overrides apply on top of it.
    with open(ROOT / "config" / "config.yaml") as _f:
        _default = yaml.safe_load(_f)
    update_config(_default, dict(config))
    config.clear()
    config.update(_default)

validate(config, SCHEMA)


def _apply_dataset_defaults():
    """Fill the per-kind defaults of the schema into each dataset description."""
    for spec in config["datasets"].values():
        for key, prop in SCHEMA_DEFS[spec["kind"]]["properties"].items():
            default = prop.get("default", SCHEMA_DEFS["common"].get(key, {}).get("default"))
            if key not in spec and default is not None:
                spec[key] = default


_apply_dataset_defaults()


def _check_geotiff_folders():
    """A geotiff_folder dataset's folder exists and holds the files it names."""
    for name, spec in config["datasets"].items():
        if spec["kind"] != "geotiff_folder":
            continue
        folder = Path(spec["path"])
        where = f"datasets.{name}.path: {folder}"
        if not folder.is_dir():
            raise ValueError(
                f"{where}: folder not found (relative paths start in the working "
                f"directory, {Path.cwd()})"
            )
        if spec.get("mosaics"):
            missing = [
                f for files in spec["mosaics"].values() for f in files if not (folder / f).is_file()
            ]
            if missing:
                raise ValueError(f"{where}: mosaic tiles not found: {', '.join(missing[:5])}")
        elif not any(folder.glob(spec["pattern"])):
            raise ValueError(f"{where}: no files match {spec['pattern']!r}")


_check_geotiff_folders()


def size_weights(size):
    """Where a LineRWKV size's weights come from: `train` or `release`."""
    weights = config["linerwkv"].get("weights", "train")
    return weights.get(size, "train") if isinstance(weights, dict) else weights


def trained_sizes():
    """The configured LineRWKV sizes that are trained (not released weights)."""
    return [size for size in config["linerwkv"]["sizes"] if size_weights(size) == "train"]


def _check_train_datasets():
    if "linerwkv" not in config:
        return
    if "release" in config["datasets"]:
        raise ValueError(
            "datasets: the name 'release' is reserved (models/release/ holds "
            "the released LineRWKV weights)"
        )
    if not trained_sizes():
        return
    if "train_dataset" not in config["linerwkv"]:
        raise ValueError(
            f"linerwkv: sizes {', '.join(trained_sizes())} are trained: give "
            f"train_dataset (or weights: release)"
        )
    train = config["linerwkv"]["train_dataset"]
    pairs = train.items() if isinstance(train, dict) else [(d, train) for d in config["datasets"]]
    for evaluated, source in pairs:
        if evaluated not in config["datasets"]:
            raise ValueError(f"linerwkv.train_dataset: {evaluated!r} is not a dataset")
        if source not in config["datasets"]:
            raise ValueError(f"linerwkv.train_dataset {source!r} is not a dataset")
    if isinstance(train, dict):
        missing = sorted(set(config["datasets"]) - set(train))
        if missing:
            raise ValueError(
                f"linerwkv.train_dataset has no training dataset for {', '.join(missing)}"
            )


_check_train_datasets()

# Registry codecs evaluated once per trained model size; the workflow gives them the model
# file and the job's thread count as the parameters `model` and `threads`.
MODEL_CODECS = {"linerwkv", "linerwkv-lms"}


# Lossy registry codecs trained once per lambda (`hsicomp train-gdn`): an entry lists
# `lambdas`, each trained model is one rate point ({model} = the lambda tag, delta 0 = no
# bound), and the workflow gives the model file and thread count as `model` and `threads`.
GDN_CODECS = {"gdn"}
GDN_KEYS = {"lambdas", "preset", "settings", "train_dataset"}
# One-model curve codecs: an entry trains ONE model (`hsicomp train-gdn` with the entry's
# `lambdas` and settings) and evaluates each value of its rate list as one rate point:
# gdn-gain (gain units, one level per lambda) at `levels_eval`, {model} = g<level>;
# gdn-ohm (adaptive-rate One-Hot-Max, lambdas at the fewest and at all channels) at
# `fractions_eval` (channel fractions), {model} = f<fraction>.
CURVE_CODECS = {
    "gdn-gain": {"points": "levels_eval", "param": "level", "tag": "g"},
    "gdn-ohm": {"points": "fractions_eval", "param": "fraction", "tag": "f"},
}
CURVE_KEYS = {spec["points"] for spec in CURVE_CODECS.values()}
# Lossy codecs overfitted to each cube at encode time (nothing to train): an entry lists
# `lambdas`, each one rate point ({model} = the lambda tag), given to the codec as `lam`.
OVERFIT_CODECS = {"coolchic"}
LEARNED_CODECS = GDN_CODECS | set(CURVE_CODECS) | OVERFIT_CODECS
# Settings a gdn-ohm entry gets unless its settings give them.
OHM_DEFAULTS = {"ohm_symbols": 32, "ohm_min_channels": 1}


def codec_name(label):
    """Registry name of the codec entry ``label`` (its `codec:` key, default the label)."""
    return config["codecs"][label].get("codec", label)


def _check_codec_names():
    """Every codec entry names a registry codec (by its `codec:` key or its label)."""
    import difflib

    known = SCHEMA_DEFS["codec_name"]["enum"]
    for label, entry in config["codecs"].items():
        if "codec" not in entry and label not in known:
            close = difflib.get_close_matches(label, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"codecs.{label}: no codec of that name ({hint}known: "
                f"{', '.join(known)}; another label needs `codec: <name>`)"
            )


_check_codec_names()


def lambda_tag(value):
    """The {model} value of one lambda: `l` and the number in plain decimal (l0.003)."""
    return f"l{Decimal(repr(float(value))).normalize():f}"


def gdn_lambdas(label):
    """Lambda tag -> lambda of a gdn (or coolchic) entry, in config order."""
    return {lambda_tag(v): float(v) for v in config["codecs"][label]["lambdas"]}


def rate_tag(label, value):
    """The {model} value of one rate point of a curve entry: the codec's letter and the
    number in plain decimal (g0.5, f0.25)."""
    return f"{CURVE_CODECS[codec_name(label)]['tag']}{Decimal(repr(float(value))).normalize():f}"


def curve_points(label):
    """Rate tag -> rate parameter value of a curve entry (gdn-gain, gdn-ohm), config order."""
    key = CURVE_CODECS[codec_name(label)]["points"]
    return {rate_tag(label, v): float(v) for v in config["codecs"][label][key]}


def curve_model_file(label, dataset):
    """The one trained model of curve entry ``label`` that codes ``dataset``."""
    return f"models/{gdn_train_dataset(label, dataset)}/{codec_name(label)}-{label}.pt"


def curve_train_settings(label):
    """Training settings of a curve entry's model: the entry's settings, preset and lambdas
    (and the OHM defaults for gdn-ohm)."""
    entry = config["codecs"][label]
    extra = OHM_DEFAULTS if codec_name(label) == "gdn-ohm" else {}
    return {
        **extra,
        **entry.get("settings", {}),
        "preset": entry.get("preset", "tiny"),
        "lambdas": [float(v) for v in entry["lambdas"]],
    }


def labels_of(codecs):
    """Regex matching exactly the codec labels whose codec is in ``codecs`` (or nothing)."""
    labels = [re.escape(label) for label in config["codecs"] if codec_name(label) in codecs]
    return "|".join(labels) if labels else "(?!)"


def gdn_train_dataset(label, dataset):
    """The dataset whose training split trains the gdn models of ``label`` coding ``dataset``."""
    train = config["codecs"][label].get("train_dataset", dataset)
    return train[dataset] if isinstance(train, dict) else train


def gdn_model_file(label, tag, dataset):
    """The trained gdn model of one lambda tag that codes ``dataset``."""
    return f"models/{gdn_train_dataset(label, dataset)}/gdn-{label}-{tag}.pt"


def gdn_train_settings(label, tag):
    """Training settings of one gdn model: the entry's settings, preset and lambda."""
    entry = config["codecs"][label]
    return {
        **entry.get("settings", {}),
        "preset": entry.get("preset", "tiny"),
        "lmbda": gdn_lambdas(label)[tag],
    }


def gdn_train_threads(label):
    """Threads of a gdn training job: settings.threads, default the entry's threads."""
    entry = config["codecs"][label]
    return entry.get("settings", {}).get("threads", entry.get("threads", 1))


def _check_curve_entry(label, entry):
    name = codec_name(label)
    key = CURVE_CODECS[name]["points"]
    if name == "gdn-gain" and len(entry.get("lambdas", [])) < 2:
        raise ValueError(f"codecs.{label}: codec gdn-gain needs at least 2 lambdas (levels)")
    if name == "gdn-ohm" and len(entry.get("lambdas", [])) != 2:
        raise ValueError(
            f"codecs.{label}: codec gdn-ohm needs 2 lambdas (at the fewest and at all channels)"
        )
    points = entry.get(key)
    if not points:
        raise ValueError(f"codecs.{label}: codec {name} needs {key} (rate points)")
    top = len(entry["lambdas"]) - 1 if name == "gdn-gain" else 1
    bad = [v for v in points if not 0 <= v <= top]
    if bad:
        raise ValueError(f"codecs.{label}.{key}: {bad[0]} is not in [0, {top}]")
    if len(curve_points(label)) != len(points):
        raise ValueError(f"codecs.{label}.{key}: two points have the same tag")
    for other in sorted((CURVE_KEYS - {key}) & set(entry)):
        raise ValueError(f"codecs.{label}: {other} does not apply to codec {name}")


def _check_gdn_codecs():
    for label, entry in config["codecs"].items():
        name = codec_name(label)
        if name not in LEARNED_CODECS:
            extra = sorted((GDN_KEYS | CURVE_KEYS) & set(entry))
            if extra:
                raise ValueError(
                    f"codecs.{label}: {', '.join(extra)} only apply to codecs "
                    f"{', '.join(sorted(LEARNED_CODECS))}"
                )
            continue
        if name in OVERFIT_CODECS:
            extra = sorted(((GDN_KEYS | CURVE_KEYS) - {"lambdas"}) & set(entry))
            if extra:
                raise ValueError(
                    f"codecs.{label}: {', '.join(extra)} do not apply to codec "
                    f"{name} (nothing is trained; set its parameters in params)"
                )
        if name in CURVE_CODECS:
            _check_curve_entry(label, entry)
        elif CURVE_KEYS & set(entry):
            key = sorted(CURVE_KEYS & set(entry))[0]
            owner = next(c for c, spec in CURVE_CODECS.items() if spec["points"] == key)
            raise ValueError(f"codecs.{label}: {key} only applies to codec {owner}")
        elif not entry.get("lambdas"):
            raise ValueError(
                f"codecs.{label}: codec {name} needs lambdas (one rate point per lambda)"
            )
        elif len(gdn_lambdas(label)) != len(entry["lambdas"]):
            raise ValueError(f"codecs.{label}.lambdas: two lambdas have the same tag")
        if entry.get("deltas", [0]) != [0]:
            raise ValueError(
                f"codecs.{label}.deltas: codec {name} is lossy, only delta 0 (no bound)"
            )
        given = sorted(
            {"model", "threads", "level", "fraction", "lam"} & set(entry.get("params", {}))
        )
        if given:
            raise ValueError(f"codecs.{label}.params: {', '.join(given)} is set by the workflow")
        train = entry.get("train_dataset")
        if train is None:
            continue
        for evaluated, source in (train.items() if isinstance(train, dict) else [(None, train)]):
            for name in (evaluated, source):
                if name is not None and name not in config["datasets"]:
                    raise ValueError(f"codecs.{label}.train_dataset: {name!r} is not a dataset")
        if isinstance(train, dict) and set(config["datasets"]) - set(train):
            missing = ", ".join(sorted(set(config["datasets"]) - set(train)))
            raise ValueError(f"codecs.{label}.train_dataset has no dataset for {missing}")


_check_gdn_codecs()


def _check_model_codecs():
    for label, entry in config["codecs"].items():
        if codec_name(label) not in MODEL_CODECS:
            continue
        if not config.get("linerwkv"):
            raise ValueError(
                f"codecs.{label} uses codec {codec_name(label)!r}, which needs trained models:"
                f" add a linerwkv: section (train_dataset, sizes) to the config"
            )
        extra = sorted(set(entry.get("sizes", [])) - set(config["linerwkv"]["sizes"]))
        if extra:
            raise ValueError(f"codecs.{label}.sizes: {', '.join(extra)} not in linerwkv.sizes")
        given = sorted({"model", "threads"} & set(entry.get("params", {})))
        if given:
            raise ValueError(
                f"codecs.{label}.params: {', '.join(given)} is set by the workflow"
                f" (model: one per linerwkv size; threads: the entry's threads)"
            )


_check_model_codecs()

SHARDS = config["evaluation"]["shards"]

# Rules run `python -m hsicomp`: the Python running Snakemake comes first on PATH; with
# --sdm conda the rule's environment provides python and the package comes from src/.
if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
    _src = shlex.quote(str(ROOT / "src"))
    # Snakemake formats the prefix like a command: shell braces are doubled once more.
    shell.prefix(f"set -euo pipefail; export PYTHONPATH={_src}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
else:
    _bin = shlex.quote(str(Path(sys.executable).parent))
    shell.prefix(f"set -euo pipefail; export PATH={_bin}:$PATH; ")

ENV = f"../envs/{config['conda_env']}.yaml"


def train_settings(size):
    """Training settings of one size: shared settings, then the size's own."""
    lr = config["linerwkv"]
    return {**lr.get("settings", {}), **lr.get("size_settings", {}).get(size, {}), "size": size}


def train_dataset(dataset):
    """The dataset whose training split trains the models that code ``dataset``."""
    train = config["linerwkv"]["train_dataset"]
    return train[dataset] if isinstance(train, dict) else train


def model_file(size, dataset):
    """The LineRWKV model of one size that codes ``dataset``: trained on its training
    dataset, or the released weights converted (models/release/)."""
    if size_weights(size) == "release":
        return f"models/release/linerwkv-{size}.pt"
    return f"models/{train_dataset(dataset)}/linerwkv-{size}.pt"


#: The DVC imports of the released LineRWKV checkpoints (see checkpoints/linerwkv-release/).
RELEASE_CHECKPOINT = "checkpoints/linerwkv-release/{lower}.pth"


def release_checkpoint(wildcards):
    return RELEASE_CHECKPOINT.format(lower=wildcards.size.lower())


def model_files():
    """Every trained model the configuration asks for (LineRWKV sizes, gdn lambdas)."""
    lr = config.get("linerwkv")
    files = (
        {model_file(size, d) for size in lr["sizes"] for d in config["datasets"]} if lr else set()
    )
    for label in config["codecs"]:
        if codec_name(label) in GDN_CODECS:
            files |= {
                gdn_model_file(label, tag, d)
                for tag in gdn_lambdas(label)
                for d in config["datasets"]
            }
        if codec_name(label) in CURVE_CODECS:
            files |= {curve_model_file(label, d) for d in config["datasets"]}
    return sorted(files)


def dataset_spec(name):
    return config["datasets"][name]


#: Keys of a hyspecnet entry that only the download and extraction use: changing them does
#: not prepare the data again.
DOWNLOAD_ONLY_KEYS = (
    "base_url",
    "archives",
    "retries",
    "max_archive_bytes",
    "download_deadline",
    "download_min_rate",
    "download_rate_window",
    "max_extracted_bytes",
)


def prepare_spec(name):
    """The dataset entry as `hsicomp prepare` takes it (without the download-only keys)."""
    return {k: v for k, v in dataset_spec(name).items() if k not in DOWNLOAD_ONLY_KEYS}


def psnr_peak(name):
    spec = dataset_spec(name)
    return spec.get("psnr_peak", (1 << spec["bit_depth"]) - 1)


def _provenance():
    """One line for the report: the configuration files and each dataset's PSNR peak (an
    Untracked parameter of the rules: naming the configuration differently reruns nothing)."""
    files = workflow.config_settings.configfiles
    source = (
        ", ".join(str(f) for f in files) if files else "the built-in default (config/config.yaml)"
    )
    peaks = "; ".join(f"{name} {psnr_peak(name):g}" for name in config["datasets"])
    return f"Configuration: {source}. PSNR peak per dataset: {peaks}."


PROVENANCE = _provenance()


def codec_deltas(codec):
    """Deltas of a codec entry; a learned lossy entry has the single point delta 0 (no
    bound)."""
    if codec_name(codec) in LEARNED_CODECS:
        return [0]
    return config["codecs"][codec].get("deltas", config["deltas"])


def codec_threads(codec):
    return config["codecs"][codec].get("threads", 1)


def codec_runtime(codec):
    """Minutes of each encode and verify job of a codec entry (cluster wall time)."""
    return config["codecs"][codec].get("runtime", 60)


def train_gpus(settings):
    """GPUs a training job asks for: 1 when its device is cuda, or auto with
    `train_gpu: true`; else 0."""
    device = settings.get("device", "auto")
    return int(device == "cuda" or (device == "auto" and config.get("train_gpu", False)))


def codec_models(codec):
    """Values of the {model} wildcard of a codec entry: the linerwkv sizes, the gdn (and
    coolchic) lambda tags, the rate tags of a curve entry (gdn-gain, gdn-ohm), or "-"."""
    if codec_name(codec) in MODEL_CODECS:
        return list(config["codecs"][codec].get("sizes", config["linerwkv"]["sizes"]))
    if codec_name(codec) in GDN_CODECS | OVERFIT_CODECS:
        return list(gdn_lambdas(codec))
    if codec_name(codec) in CURVE_CODECS:
        return list(curve_points(codec))
    return ["-"]


def _check_model(wildcards):
    if wildcards.model not in codec_models(wildcards.codec):
        raise ValueError(
            f"codec {wildcards.codec} has no model {wildcards.model!r}"
            f" (models: {', '.join(codec_models(wildcards.codec))})"
        )


def trained_model(label, model, dataset):
    """The model file that codec entry ``label`` with {model} ``model`` uses, or None."""
    if codec_name(label) in MODEL_CODECS:
        return model_file(model, dataset)
    if codec_name(label) in GDN_CODECS:
        return gdn_model_file(label, model, dataset)
    if codec_name(label) in CURVE_CODECS:
        return curve_model_file(label, dataset)
    return None


def model_input(wildcards):
    """The model file an encode or verify job needs ([] for codecs without one)."""
    _check_model(wildcards)
    path = trained_model(wildcards.codec, wildcards.model, wildcards.dataset)
    return [] if path is None else [path]


def job_params(label, model, dataset, threads):
    """Codec parameters of a job; codecs with a trained model get `model` and `threads`,
    a curve entry also the rate parameter of its {model} tag (level, fraction), an overfitted
    codec (coolchic) its lambda as `lam` and the threads."""
    params = dict(config["codecs"][label].get("params", {}))
    path = trained_model(label, model, dataset)
    if path is not None:
        params.update(model=path, threads=threads)
    if codec_name(label) in CURVE_CODECS:
        params[CURVE_CODECS[codec_name(label)]["param"]] = curve_points(label)[model]
    if codec_name(label) in OVERFIT_CODECS:
        params.update(lam=gdn_lambdas(label)[model], threads=threads)
    return params


def codec_params(wildcards, threads):
    """Codec parameters of a job as quoted JSON (see job_params)."""
    return quoted_json(job_params(wildcards.codec, wildcards.model, wildcards.dataset, threads))


def evaluation_points():
    """Every (dataset, codec label, model, delta) the configuration asks for."""
    for dataset in config["datasets"]:
        for codec in config["codecs"]:
            for model in codec_models(codec):
                for delta in codec_deltas(codec):
                    yield dataset, codec, model, delta


# The check of every verified shard against its record, before aggregate (see
# rules/evaluate.smk).


class ShardProblem(NamedTuple):
    reason: str  # one line naming the file
    remove: list  # the shard's outputs to remove, its record last
    stamp: int  # modification time (ns) of the record the files no longer match


def _bitstream_problem(path, size, sha256, since, when):
    """Why the bitstream ``path`` is not the file recorded ``when`` (verified, encoded), or
    None; the sha256 (if recorded) is compared for files modified after ``since`` (ns)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path}: missing"
    if st.st_size != size:
        return f"{path}: {st.st_size} bytes, {size} when {when}"
    if sha256 is not None and st.st_mtime_ns > since:
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                return f"{path}: changed since it was {when}"
    return None


def _read_record(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def shard_problem(dataset, codec, model, delta, shard, hash_all=False):
    """A ShardProblem when a shard's bitstreams no longer match their record (its metrics
    CSV; before it is verified, its timings CSV), else None. ``hash_all``: compare the
    sha256 of every file, not only of those modified after the record."""
    keys = dict(dataset=dataset, codec=codec, model=model, delta=delta, shard=shard)
    bits, timings, metrics = (p.format(**keys) for p in (BITSTREAMS, TIMINGS, METRICS))
    if os.path.exists(metrics):
        record, when, remove = metrics, "verified", [bits, timings, metrics]
        read = lambda r: (r["patch_id"], int(r["bytes"]), r["sha256"])
    elif os.path.exists(timings) and os.path.isdir(bits):
        record, when, remove = timings, "encoded", [bits, timings]
        read = lambda r: (r["patch_id"], int(r["bytes"]), None)
    else:
        return None
    stamp = os.stat(record).st_mtime_ns
    try:
        files = [read(row) for row in _read_record(record)]
    except (OSError, csv.Error, KeyError, TypeError, ValueError):
        if record == metrics:  # or written before metrics recorded checksums: verify again
            return ShardProblem(
                f"{metrics}: unreadable or without bitstream checksums", [metrics], stamp
            )
        return ShardProblem(f"{timings}: unreadable", remove, stamp)
    for patch_id, size, sha256 in files:
        reason = _bitstream_problem(
            f"{bits}/{patch_id}.hsic", size, sha256, -1 if hash_all else stamp, when
        )
        if reason:
            return ShardProblem(reason, remove, stamp)
    return None


# invalidate_shards stamp -> the problems it handles (filled by aggregate_inputs)
_PROBLEMS = {}


def aggregate_inputs(wildcards):
    """The metrics CSV of every shard that still matches its record, and for the others
    the invalidate_shards output (after which their metrics are built again)."""
    files, problems = [], []
    hash_all = not os.path.exists(rules.aggregate.output.rd)
    for dataset, codec, model, delta in evaluation_points():
        for shard in range(SHARDS):
            keys = dict(dataset=dataset, codec=codec, model=model, delta=delta, shard=shard)
            problem = shard_problem(**keys, hash_all=hash_all)
            if problem is None:
                files.append(METRICS.format(**keys))
            else:
                problems.append(problem)
    if problems:
        for problem in problems:
            logger.warning(f"{problem.reason}: the shard is encoded and verified again")
        text = "\n".join(f"{p.reason} {p.stamp}" for p in problems)
        stamp = hashlib.sha256(text.encode()).hexdigest()[:16]
        _PROBLEMS[stamp] = problems
        files.append(INVALIDATED.format(stamp=stamp))
    return files


def invalidated(wildcards):
    """The problems behind one invalidate_shards job."""
    if wildcards.stamp not in _PROBLEMS:
        aggregate_inputs(wildcards)
    return _PROBLEMS.get(wildcards.stamp, [])


def download_root(root):
    """The hyspecnet dataset description whose root is ``root``."""
    for spec in config["datasets"].values():
        if spec["kind"] == "hyspecnet" and spec.get("download") and spec["root"] == root:
            return spec
    raise ValueError(f"no hyspecnet dataset with download: true has root {root!r}")


class Untracked:
    """A rule parameter that does not change the rule's output (an address, a retry count, a
    time or size bound): Snakemake's params rerun trigger compares only parameters of
    builtin types, so changing this one does not make the job (and all after it) run again.
    """

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


def archive_url(wildcards):
    return f"{download_root(wildcards.root)['base_url'].rstrip('/')}/{wildcards.archive}"


def prepare_inputs(wildcards):
    spec = dataset_spec(wildcards.dataset)
    if spec["kind"] == "hyspecnet" and spec.get("download"):
        return [f"{spec['root']}/.extracted/{name}.done" for name in spec["archives"]]
    if spec["kind"] == "geotiff_folder":
        folder = Path(spec["path"])
        if spec.get("mosaics"):
            return sorted({str(folder / f) for tiles in spec["mosaics"].values() for f in tiles})
        return sorted(str(p) for p in folder.glob(spec["pattern"]))
    return []


def quoted_json(value):
    return shlex.quote(json.dumps(value, sort_keys=True))


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    codec=r"[a-z0-9_-]+",
    model=r"[A-Za-z0-9_.-]+",
    delta=r"\d+",
    shard=r"\d+",
