"""The evaluation plan: a workflow configuration checked and turned into its jobs.

The Snakemake rules (``rules/*.smk``) hold no logic of their own: they ask one
:class:`Plan` which models to train, which (dataset, codec label, model, delta) points to
encode and verify, which files each job needs and which parameters it passes. What a codec
needs from the workflow comes from its class (:attr:`~hsicomp.codecs.base.Codec.training`,
:attr:`~hsicomp.codecs.base.Codec.rate_points`), so a new codec needs no workflow edits.

Every mistake the schema cannot express raises :class:`ConfigError` with one line naming
the configuration key, before any job runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from hsicomp.codecs import available_codecs, codec_class
from hsicomp.codecs.base import Codec, Training
from hsicomp.errors import HsicompError

#: Output paths of the evaluation jobs; {model} is "-", a LineRWKV size or a rate tag.
SHARD = "{dataset}/{codec}/{model}/d{delta}/shard{shard}"
BITSTREAMS = f"results/bitstreams/{SHARD}"
TIMINGS = f"results/bitstreams/{SHARD}.timings.csv"
BAND_BITS = f"results/bitstreams/{SHARD}.band_bits.csv"
METRICS = f"results/metrics/{SHARD}.csv"
INVALIDATED = "results/invalidated/{stamp}.txt"

#: Keys of a hyspecnet dataset that only the download and extraction use: changing them
#: does not prepare the data again.
DOWNLOAD_ONLY_KEYS = ("base_url", "archives", "retries", "max_archive_bytes",
                      "download_deadline", "download_min_rate", "download_rate_window",
                      "max_extracted_bytes")
#: Keys of a codec entry that describe training or rate points (learned codecs only).
LEARNED_KEYS = ("lambdas", "preset", "settings", "train_dataset")
#: The released LineRWKV checkpoints (DVC imports, see checkpoints/linerwkv-release/).
RELEASE_CHECKPOINT = "checkpoints/linerwkv-release/{lower}.pth"
#: LineRWKV sizes from smallest to largest.
SIZES = ("XS", "S", "M", "L")
#: The error image's delta when the config gives none: the evaluated delta closest to it.
ERROR_IMAGE_DELTA = 10


class ConfigError(HsicompError):
    """A configuration the workflow cannot run (one line naming the key)."""


def number_tag(letter: str, value: float) -> str:
    """A rate point's {model} value: ``letter`` and the number in plain decimal (l0.003)."""
    return f"{letter}{Decimal(repr(float(value))).normalize():f}"


def apply_dataset_defaults(config: dict, schema: dict) -> None:
    """Fill the per-kind defaults of ``schema`` into each dataset of ``config``."""
    defs = schema["$defs"]
    for spec in config["datasets"].values():
        for key, prop in defs[spec["kind"]]["properties"].items():
            default = prop.get("default", defs["common"].get(key, {}).get("default"))
            if key not in spec and default is not None:
                spec[key] = default


@dataclass(frozen=True)
class Point:
    """One evaluated point: a codec label coding a dataset with one model at one delta."""

    dataset: str
    label: str
    model: str
    delta: int


def _trained_basis_keys(entry: dict) -> set[str]:
    """The learned-codec keys an entry may also have for its trained spectral basis."""
    return {"train_dataset"} if entry.get("trained_basis") else set()


class Plan:
    """The jobs of a configuration validated against the workflow schema (with its
    defaults filled in); raises :class:`ConfigError` for what the schema cannot check.

    ``root`` is the folder relative paths of the configuration start in (the working
    directory); ``check_files=False`` skips the checks of GeoTIFF folders on disk.
    """

    def __init__(self, config: dict, root: Path | None = None, check_files: bool = True):
        self.config = config
        self.datasets: dict[str, dict] = config["datasets"]
        self.entries: dict[str, dict] = config["codecs"]
        self.linerwkv: dict | None = config.get("linerwkv")
        self.shards: int = config["evaluation"]["shards"]
        root = Path.cwd() if root is None else root
        if check_files:
            self._check_geotiff_folders(root)
        self._check_linerwkv()
        self.codecs: dict[str, type[Codec]] = {label: self._codec_of(label)
                                               for label in self.entries}
        for label in self.entries:
            self._check_entry(label)
        self.figures = Figures(self)

    # Datasets.

    def _check_geotiff_folders(self, root: Path) -> None:
        for name, spec in self.datasets.items():
            if spec["kind"] != "geotiff_folder":
                continue
            folder = root / spec["path"]
            where = f"datasets.{name}.path: {spec['path']}"
            if not folder.is_dir():
                raise ConfigError(f"{where}: folder not found (relative paths start in the "
                                  f"working directory, {root})")
            if spec.get("mosaics"):
                missing = [f for files in spec["mosaics"].values() for f in files
                           if not (folder / f).is_file()]
                if missing:
                    raise ConfigError(f"{where}: mosaic tiles not found: "
                                      f"{', '.join(missing[:5])}")
            elif not any(folder.glob(spec["pattern"])):
                raise ConfigError(f"{where}: no files match {spec['pattern']!r}")

    def psnr_peak(self, dataset: str) -> float:
        """The PSNR peak of a dataset (default 2**bit_depth - 1)."""
        spec = self.datasets[dataset]
        return spec.get("psnr_peak", (1 << spec["bit_depth"]) - 1)

    def prepare_spec(self, dataset: str) -> dict:
        """The dataset entry as ``hsicomp prepare`` takes it (no download-only keys)."""
        return {k: v for k, v in self.datasets[dataset].items() if k not in DOWNLOAD_ONLY_KEYS}

    def prepare_inputs(self, dataset: str) -> list[str]:
        """The files ``prepare`` reads: the extraction stamps of a downloaded hyspecnet
        dataset, the tiles of a GeoTIFF folder, nothing for the others."""
        spec = self.datasets[dataset]
        if spec["kind"] == "hyspecnet" and spec.get("download"):
            return [f"{spec['root']}/.extracted/{name}.done" for name in spec["archives"]]
        if spec["kind"] == "geotiff_folder":
            folder = Path(spec["path"])
            if spec.get("mosaics"):
                return sorted({str(folder / f) for tiles in spec["mosaics"].values()
                               for f in tiles})
            return sorted(str(p) for p in folder.glob(spec["pattern"]))
        return []

    def download_root(self, root: str) -> dict:
        """The downloaded hyspecnet dataset whose root is ``root``."""
        for spec in self.datasets.values():
            if spec["kind"] == "hyspecnet" and spec.get("download") and spec["root"] == root:
                return spec
        raise ConfigError(f"no hyspecnet dataset with download: true has root {root!r}")

    def archive_url(self, root: str, archive: str) -> str:
        """The address of one archive of the downloaded hyspecnet dataset at ``root``."""
        return f"{self.download_root(root)['base_url'].rstrip('/')}/{archive}"

    def _train_source(self, train: str | dict | None, dataset: str) -> str:
        if train is None:
            return dataset
        return train[dataset] if isinstance(train, dict) else train

    def _check_train_dataset(self, where: str, train: str | dict) -> None:
        pairs = train.items() if isinstance(train, dict) else [(None, train)]
        for evaluated, source in pairs:
            for name in (evaluated, source):
                if name is not None and name not in self.datasets:
                    raise ConfigError(f"{where}: {name!r} is not a dataset")
        missing = sorted(set(self.datasets) - set(train)) if isinstance(train, dict) else []
        if missing:
            raise ConfigError(f"{where} has no training dataset for {', '.join(missing)}")

    # LineRWKV models.

    def _check_linerwkv(self) -> None:
        if self.linerwkv is None:
            return
        if "release" in self.datasets:
            raise ConfigError("datasets: the name 'release' is reserved (models/release/ "
                              "holds the released LineRWKV weights)")
        trained = self.trained_sizes()
        if not trained:
            return
        if "train_dataset" not in self.linerwkv:
            raise ConfigError(f"linerwkv: sizes {', '.join(trained)} are trained: give "
                              f"train_dataset (or weights: release)")
        self._check_train_dataset("linerwkv.train_dataset", self.linerwkv["train_dataset"])

    def size_weights(self, size: str) -> str:
        """Where a LineRWKV size's weights come from: ``train`` or ``release``."""
        weights = self.linerwkv.get("weights", "train") if self.linerwkv else "train"
        return weights.get(size, "train") if isinstance(weights, dict) else weights

    def trained_sizes(self) -> list[str]:
        """The configured LineRWKV sizes that are trained (not released weights)."""
        sizes = self.linerwkv["sizes"] if self.linerwkv else []
        return [size for size in sizes if self.size_weights(size) == "train"]

    def linerwkv_settings(self, size: str) -> dict:
        """Training settings of one size: the shared settings, then the size's own."""
        lr = self.linerwkv
        return {**lr.get("settings", {}), **lr.get("size_settings", {}).get(size, {}),
                "size": size}

    def linerwkv_model(self, size: str, dataset: str) -> str:
        """The LineRWKV model of one size that codes ``dataset``: trained on its training
        dataset, or the released weights converted (models/release/)."""
        if self.size_weights(size) == "release":
            return f"models/release/linerwkv-{size}.pt"
        source = self._train_source(self.linerwkv["train_dataset"], dataset)
        return f"models/{source}/linerwkv-{size}.pt"

    # Codec entries.

    def _codec_of(self, label: str) -> type[Codec]:
        name = self.entries[label].get("codec", label)
        cls = codec_class(name)
        if cls is None:
            known = available_codecs()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"codecs.{label}: no codec of that name ({hint}known: "
                              f"{', '.join(known)}; another label needs `codec: <name>`)")
        return cls

    def codec_name(self, label: str) -> str:
        """The registry name of codec entry ``label``."""
        return self.codecs[label].name

    def training(self, label: str) -> Training:
        """How the model of codec entry ``label`` is obtained."""
        return self.codecs[label].training

    def labels_with(self, *kinds: Training) -> list[str]:
        """The codec labels whose codec's training is one of ``kinds``, in config order."""
        return [label for label in self.entries if self.training(label) in kinds]

    @staticmethod
    def codec_names_with(*kinds: Training) -> list[str]:
        """The registry names of the codecs whose training is one of ``kinds``."""
        return [name for name in available_codecs() if codec_class(name).training in kinds]

    def _learned_names(self) -> list[str]:
        return self.codec_names_with(Training.PER_LAMBDA, Training.PER_ENTRY,
                                     Training.PER_CUBE)

    def _check_entry(self, label: str) -> None:
        entry, cls = self.entries[label], self.codecs[label]
        name, where = cls.name, f"codecs.{label}"
        owners: dict[str, list[str]] = {}
        for other in map(codec_class, available_codecs()):
            if other.rate_points:
                owners.setdefault(other.rate_points.key, []).append(other.name)
        own_key = cls.rate_points.key if cls.rate_points else None
        for key in sorted(set(owners) & set(entry) - {own_key}):
            if own_key is not None:
                raise ConfigError(f"{where}: {key} does not apply to codec {name}")
            if cls.training in (Training.PER_LAMBDA, Training.PER_CUBE):
                codecs = "codec" if len(owners[key]) == 1 else "codecs"
                raise ConfigError(f"{where}: {key} only applies to {codecs} "
                                  f"{', '.join(owners[key])}")
        if entry.get("trained_basis"):
            self._check_trained_basis(label)
        if cls.training in (Training.NONE, Training.LINERWKV):
            extra = sorted(((set(LEARNED_KEYS) | set(owners)) - {own_key}
                            - _trained_basis_keys(entry)) & set(entry))
            if extra:
                raise ConfigError(f"{where}: {', '.join(extra)} only apply to codecs "
                                  f"{', '.join(self._learned_names())}")
        if "sizes" in entry and cls.training is not Training.LINERWKV:
            raise ConfigError(f"{where}: sizes only apply to codecs evaluated with LineRWKV "
                              f"models")
        if cls.lossy and entry.get("deltas", [0]) != [0]:
            raise ConfigError(f"{where}.deltas: codec {name} is lossy, only delta 0 (no bound)")
        if cls.training is Training.LINERWKV:
            self._check_linerwkv_entry(label)
        elif cls.training is Training.NONE:
            if cls.rate_points is not None:
                self._check_points(label)
        else:
            self._check_learned_entry(label)
        given = sorted(cls.workflow_params() & set(entry.get("params", {})))
        if given:
            raise ConfigError(f"{where}.params: {', '.join(given)} is set by the workflow")
        unknown = sorted(set(entry.get("params", {})) - set(cls.defaults))
        if unknown:
            known = ", ".join(sorted(set(cls.defaults) - cls.workflow_params())) or "none"
            raise ConfigError(f"{where}.params: codec {name} has no parameter "
                              f"{', '.join(unknown)} (known: {known})")

    def _check_trained_basis(self, label: str) -> None:
        """An entry with ``trained_basis``: its codec takes one, with these parameters."""
        entry, cls = self.entries[label], self.codecs[label]
        where = f"codecs.{label}"
        if not cls.trained_basis:
            names = [n for n in available_codecs() if codec_class(n).trained_basis]
            raise ConfigError(f"{where}: trained_basis only applies to codecs "
                              f"{', '.join(names)}")
        if "train_dataset" in entry:
            self._check_train_dataset(f"{where}.train_dataset", entry["train_dataset"])
        try:
            cls(**{**entry.get("params", {}), "basis_model": "spectral-basis.npz"})
        except HsicompError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def _check_points(self, label: str) -> None:
        """The rate points of a codec without a model: present, distinct, each accepted
        by the codec."""
        entry, cls = self.entries[label], self.codecs[label]
        points, where = cls.rate_points, f"codecs.{label}"
        values = entry.get(points.key)
        if not values:
            raise ConfigError(f"{where}: codec {cls.name} needs {points.key} (rate points)")
        if len(self.rate_points(label)) != len(values):
            raise ConfigError(f"{where}.{points.key}: two points have the same tag")
        for value in values:
            try:
                cls(**{**entry.get("params", {}), points.param: value})
            except HsicompError as exc:
                raise ConfigError(f"{where}.{points.key}: {exc}") from None

    def _check_linerwkv_entry(self, label: str) -> None:
        where = f"codecs.{label}"
        if not self.linerwkv:
            raise ConfigError(f"{where} uses codec {self.codec_name(label)!r}, which needs "
                              f"trained models: add a linerwkv: section (train_dataset, "
                              f"sizes) to the config")
        extra = [s for s in self.entries[label].get("sizes", [])
                 if s not in self.linerwkv["sizes"]]
        if extra:
            raise ConfigError(f"{where}.sizes: {', '.join(extra)} not in linerwkv.sizes")

    def _check_learned_entry(self, label: str) -> None:
        entry, cls = self.entries[label], self.codecs[label]
        name, where = cls.name, f"codecs.{label}"
        lambdas = entry.get("lambdas", [])
        if cls.training is Training.PER_CUBE:
            extra = sorted((set(LEARNED_KEYS) - {"lambdas"} - _trained_basis_keys(entry))
                           & set(entry))
            if extra:
                raise ConfigError(f"{where}: {', '.join(extra)} do not apply to codec {name} "
                                  f"(nothing is trained; set its parameters in params)")
        points = cls.rate_points
        if points is None:
            if not lambdas:
                raise ConfigError(f"{where}: codec {name} needs lambdas (one rate point per "
                                  f"lambda)")
            if len(self.lambdas(label)) != len(lambdas):
                raise ConfigError(f"{where}.lambdas: two lambdas have the same tag")
        else:
            if len(lambdas) < points.min_lambdas:
                raise ConfigError(f"{where}: codec {name} needs at least {points.min_lambdas} "
                                  f"lambdas")
            if points.max_lambdas is not None and len(lambdas) > points.max_lambdas:
                raise ConfigError(f"{where}: codec {name} needs {points.max_lambdas} lambdas")
            values = entry.get(points.key)
            if not values:
                raise ConfigError(f"{where}: codec {name} needs {points.key} (rate points)")
            top = len(lambdas) - 1
            bad = [v for v in values if not 0 <= v <= top]
            if bad:
                raise ConfigError(f"{where}.{points.key}: {bad[0]} is not in [0, {top}]")
            if len(self.rate_points(label)) != len(values):
                raise ConfigError(f"{where}.{points.key}: two points have the same tag")
        if "train_dataset" in entry:
            self._check_train_dataset(f"{where}.train_dataset", entry["train_dataset"])

    def lambdas(self, label: str) -> dict[str, float]:
        """Lambda tag -> lambda of an entry, in config order."""
        return {number_tag("l", v): float(v) for v in self.entries[label].get("lambdas", [])}

    def rate_points(self, label: str) -> dict[str, float]:
        """Rate tag -> value of the rate parameter of a codec with rate points (a per-entry
        model, or a codec without a model), in config order."""
        points = self.codecs[label].rate_points
        return {number_tag(points.tag, v): float(v) for v in self.entries[label][points.key]}

    def models(self, label: str) -> list[str]:
        """The {model} values of an entry: LineRWKV sizes, lambda or rate tags, or "-"."""
        kind = self.training(label)
        if kind is Training.LINERWKV:
            return list(self.entries[label].get("sizes", self.linerwkv["sizes"]))
        if self.codecs[label].rate_points is not None:
            return list(self.rate_points(label))
        if kind in (Training.PER_LAMBDA, Training.PER_CUBE):
            return list(self.lambdas(label))
        return ["-"]

    def deltas(self, label: str) -> list[int]:
        """The deltas of an entry; a lossy codec has the one point 0 (no bound)."""
        if self.codecs[label].lossy:
            return [0]
        return self.entries[label].get("deltas", self.config["deltas"])

    def threads(self, label: str) -> int:
        """Threads of each encode and verify job of an entry."""
        return self.entries[label].get("threads", 1)

    def runtime(self, label: str) -> int:
        """Minutes of each encode and verify job of an entry (cluster wall time)."""
        return self.entries[label].get("runtime", 60)

    def points(self) -> Iterator[Point]:
        """Every (dataset, codec label, model, delta) the configuration evaluates."""
        for dataset in self.datasets:
            for label in self.entries:
                for model in self.models(label):
                    for delta in self.deltas(label):
                        yield Point(dataset, label, model, delta)

    # Trained models.

    def gdn_model(self, label: str, tag: str, dataset: str) -> str:
        """The model trained at one lambda of a per-lambda entry that codes ``dataset``."""
        source = self._train_source(self.entries[label].get("train_dataset"), dataset)
        return f"models/{source}/{self.codec_name(label)}-{label}-{tag}.pt"

    def entry_model(self, label: str, dataset: str) -> str:
        """The one model of a per-entry codec (gdn-gain, gdn-ohm) that codes ``dataset``."""
        source = self._train_source(self.entries[label].get("train_dataset"), dataset)
        return f"models/{source}/{self.codec_name(label)}-{label}.pt"

    def model_file(self, label: str, model: str, dataset: str) -> str | None:
        """The model file entry ``label`` codes ``dataset`` with at {model}, or None."""
        kind = self.training(label)
        if kind is Training.LINERWKV:
            return self.linerwkv_model(model, dataset)
        if kind is Training.PER_LAMBDA:
            return self.gdn_model(label, model, dataset)
        if kind is Training.PER_ENTRY:
            return self.entry_model(label, dataset)
        return None

    def basis_file(self, label: str, dataset: str) -> str | None:
        """The trained spectral basis entry ``label`` codes ``dataset`` with, or None."""
        entry = self.entries[label]
        if not entry.get("trained_basis"):
            return None
        source = self._train_source(entry.get("train_dataset"), dataset)
        return f"models/{source}/spectral-basis.npz"

    def model_inputs(self, label: str, model: str, dataset: str) -> list[str]:
        """The model files of the jobs of entry ``label`` at {model} on ``dataset``."""
        return [path for path in (self.model_file(label, model, dataset),
                                  self.basis_file(label, dataset)) if path]

    def model_files(self) -> list[str]:
        """Every model file the configuration asks for: each LineRWKV size of the
        ``linerwkv:`` section for each dataset (trained or released) and the models of every
        evaluated point."""
        sizes = self.linerwkv["sizes"] if self.linerwkv else []
        files = {self.linerwkv_model(size, d) for size in sizes for d in self.datasets}
        return sorted(files | {path for point in self.points()
                               for path in self.model_inputs(point.label, point.model,
                                                             point.dataset)})

    def train_settings(self, label: str, tag: str | None = None) -> dict:
        """Settings of ``hsicomp train-gdn`` for a per-lambda entry's model at lambda ``tag``
        or a per-entry codec's model (all its lambdas, and the codec's training defaults)."""
        entry, points = self.entries[label], self.codecs[label].rate_points
        settings = {**(points.train_defaults if points else {}), **entry.get("settings", {}),
                    "preset": entry.get("preset", "tiny")}
        if tag is None:
            return {**settings, "lambdas": [float(v) for v in entry["lambdas"]]}
        return {**settings, "lmbda": self.lambdas(label)[tag]}

    def train_threads(self, label: str) -> int:
        """Threads of a gdn training job: settings.threads, default the entry's threads."""
        return self.entries[label].get("settings", {}).get("threads", self.threads(label))

    def train_gpus(self, settings: dict) -> int:
        """GPUs a training job asks for: 1 when its device is cuda, or auto with
        ``train_gpu: true``; else 0."""
        device = settings.get("device", "auto")
        return int(device == "cuda" or (device == "auto" and self.config.get("train_gpu")))

    # Jobs.

    def check_model(self, label: str, model: str) -> None:
        """Raise ConfigError when ``model`` is not one of the entry's {model} values."""
        if model not in self.models(label):
            raise ConfigError(f"codec {label} has no model {model!r} (models: "
                              f"{', '.join(self.models(label))})")

    def job_params(self, label: str, model: str, dataset: str, threads: int) -> dict[str, Any]:
        """The codec parameters of one job: the entry's params and what the workflow sets
        (model file, threads, the rate parameter of the point)."""
        params = dict(self.entries[label].get("params", {}))
        cls = self.codecs[label]
        path = self.model_file(label, model, dataset)
        if path is not None:
            params.update(model=path, threads=threads)
        if cls.rate_points is not None:
            params[cls.rate_points.param] = self.rate_points(label)[model]
        if cls.training is Training.PER_CUBE:
            params.update(lam=self.lambdas(label)[model], threads=threads)
        basis = self.basis_file(label, dataset)
        if basis is not None:
            params["basis_model"] = basis
        return params

    def shard_paths(self, point: Point, shard: int) -> dict[str, str]:
        """The bitstreams folder and the timings, band-bits and metrics files of a shard."""
        keys = dict(dataset=point.dataset, codec=point.label, model=point.model,
                    delta=point.delta, shard=shard)
        return {"bitstreams": BITSTREAMS.format(**keys), "timings": TIMINGS.format(**keys),
                "band_bits": BAND_BITS.format(**keys), "metrics": METRICS.format(**keys)}

    def provenance(self, config_files: list[str]) -> str:
        """One line for the report: the configuration files and each dataset's PSNR peak."""
        source = ", ".join(map(str, config_files)) if config_files else \
            "the built-in default (config/config.yaml)"
        peaks = "; ".join(f"{name} {self.psnr_peak(name):g}" for name in self.datasets)
        return f"Configuration: {source}. PSNR peak per dataset: {peaks}."


class Figures:
    """What the one-patch figures show: the dataset and patch, the labels of the per-band
    rates and of the error image, each at an evaluated (model, delta) point, so that the
    figures read the files the evaluation wrote instead of encoding again."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        cfg = plan.config["figures"]
        self.reference: str = cfg["reference"]
        lossy = cfg.get("lossy_references")
        #: The BD-rate references: the main one, then the lossy anchors.
        self.references: list[str] = list(dict.fromkeys([self.reference, *(
            lossy if lossy is not None else
            [label for label in plan.entries
             if plan.codecs[label].lossy and plan.training(label) is Training.NONE])]))
        unknown = [r for r in lossy or [] if r not in plan.entries]
        if unknown:
            raise ConfigError(f"figures.lossy_references: {', '.join(unknown)} is not a codec "
                              f"label (labels: {', '.join(plan.entries)})")
        self.dataset: str = cfg["dataset"] or next(iter(plan.datasets))
        self.patch: str | None = cfg["patch"]
        if self.dataset not in plan.datasets:
            raise ConfigError(f"figures.dataset {self.dataset!r} is not a dataset")
        self.band_delta: int = cfg["band_rates"]["delta"]
        given = cfg["band_rates"]["codecs"]
        self.band_labels: list[str] = given or [
            label for label in plan.entries
            if self.band_delta in plan.deltas(label) and not plan.codecs[label].lossy]
        image = cfg["error_image"]
        self.image_label: str = image["codec"] or next(
            (label for label in [self.reference, *plan.entries]
             if label in plan.entries and max(plan.deltas(label)) > 0),
            next(iter(plan.entries)))
        unknown = [c for c in [*self.band_labels, self.image_label] if c not in plan.entries]
        if unknown:
            raise ConfigError(f"figures: {', '.join(unknown)} is not a codec label (labels: "
                              f"{', '.join(plan.entries)})")
        for label in given or []:
            if self.band_delta not in plan.deltas(label):
                raise ConfigError(f"figures.band_rates: codec {label} is not evaluated at "
                                  f"delta {self.band_delta} (deltas: "
                                  f"{', '.join(map(str, plan.deltas(label)))})")
        deltas = plan.deltas(self.image_label)
        if image["delta"] is None:
            self.image_delta = min(deltas, key=lambda d: (abs(d - ERROR_IMAGE_DELTA), -d))
        elif image["delta"] in deltas:
            self.image_delta = image["delta"]
        else:
            raise ConfigError(f"figures.error_image.delta: codec {self.image_label} is not "
                              f"evaluated at delta {image['delta']} (deltas: "
                              f"{', '.join(map(str, deltas))})")
        self.band: int | None = image["band"]
        signature = cfg["spectral_signature"]
        given = signature["codecs"]
        #: The lossy labels of the spectral-signature figure (none: no figure).
        self.signature_labels: list[str] = given if given is not None else [
            label for label in plan.entries if plan.codecs[label].lossy]
        wrong = [c for c in self.signature_labels
                 if c not in plan.entries or not plan.codecs[c].lossy]
        if wrong:
            raise ConfigError(f"figures.spectral_signature.codecs: {', '.join(wrong)} is not "
                              f"the label of a lossy codec")
        self.signature_rate: float = signature["rate"]
        self.signature_pixel: list[int] | None = signature["pixel"]

    def model(self, label: str) -> str:
        """The {model} of ``label`` in the one-patch figures: the smallest LineRWKV size, the
        first lambda or rate tag, or "-"."""
        models = self.plan.models(label)
        return min(models, key=lambda m: SIZES.index(m) if m in SIZES else len(SIZES))

    def point(self, label: str, delta: int) -> Point:
        """The evaluated point a one-patch figure shows for ``label``."""
        return Point(self.dataset, label, self.model(label), delta)

    def shard_files(self, label: str, delta: int, kind: str) -> list[str]:
        """One kind of shard file (see :meth:`Plan.shard_paths`) of every shard of a point."""
        point = self.point(label, delta)
        return [self.plan.shard_paths(point, shard)[kind] for shard in range(self.plan.shards)]

    def signature_sources(self) -> dict[str, dict]:
        """The ``spectral-signature --sources`` object: per label of the figure, every
        evaluated model with its decoder parameters and bitstream folders."""
        sources = {}
        for label in self.signature_labels:
            models = {}
            for model in self.plan.models(label):
                point = Point(self.dataset, label, model, 0)
                models[model] = {
                    "params": self.plan.job_params(label, model, self.dataset,
                                                   self.plan.threads(label)),
                    "bitstreams": [self.plan.shard_paths(point, k)["bitstreams"]
                                   for k in range(self.plan.shards)]}
            sources[label] = {"codec": self.plan.codec_name(label), "models": models}
        return sources

    def signature_inputs(self) -> tuple[list[str], list[str]]:
        """The bitstream folders and model files the spectral-signature figure reads."""
        folders, models = [], set()
        for label, source in self.signature_sources().items():
            for model, point in source["models"].items():
                folders += point["bitstreams"]
                path = self.plan.model_file(label, model, self.dataset)
                if path:
                    models.add(path)
        return folders, sorted(models)

    def model_files(self, label: str) -> list[str]:
        """The model file the figure's point of ``label`` decodes with (none or one)."""
        path = self.plan.model_file(label, self.model(label), self.dataset)
        return [] if path is None else [path]

    def params(self, label: str) -> dict[str, Any]:
        """Decoder parameters of ``label`` at the figure's point (the jobs' parameters)."""
        return self.plan.job_params(label, self.model(label), self.dataset,
                                    self.plan.threads(label))
