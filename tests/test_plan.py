"""The evaluation plan: what a configuration means and the mistakes it refuses, checked
without Snakemake (the workflow's rules ask this plan for everything)."""

from __future__ import annotations

import copy

import pytest
import yaml
from helpers import REPO, TINY_CONFIG
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from hsicomp.codecs import available_codecs, codec_class
from hsicomp.codecs.base import Training
from hsicomp.evaluation.plan import ConfigError, Plan, Point, apply_dataset_defaults

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

TINY = TINY_CONFIG
LINERWKV = {"train_dataset": "tiny", "sizes": ["XS"], "settings": {"epochs": 1}}


def plan_of(config: dict, root=None) -> Plan:
    """The plan of ``config`` after the workflow's schema validation and defaults."""
    config = copy.deepcopy(config)
    validate(config, str(SCHEMA_PATH))
    apply_dataset_defaults(config, SCHEMA)
    return Plan(config, root=root)


def refused(config: dict, root=None) -> str:
    with pytest.raises((ConfigError, WorkflowError)) as info:
        plan_of(config, root)
    message = str(info.value)
    if isinstance(info.value, ConfigError):
        assert "\n" not in message
    return message


def test_default_plan():
    plan = plan_of(DEFAULT)
    points = list(plan.points())
    # anchors 4 + 1 + 1 + 12 + 2 deltas, linerwkv 2 coders x 3 deltas, gdn 3 lambdas,
    # gdn-gain and gdn-ohm 5 points each, coolchic 3 lambdas, klt 4 points, the per-band
    # lossy anchors 3 each
    assert len(points) == 55
    assert Point("synthetic", "gdn-gain", "g0.5", 0) in points
    assert plan.models("gdn") == ["l0.1", "l1", "l10"]
    assert plan.models("coolchic") == ["l1", "l0.1", "l0.03"]
    assert plan.job_params("coolchic", "l0.03", "synthetic", 1) == {
        "iterations": 200, "lam": 0.03, "threads": 1}
    assert plan.job_params("gdn-ohm", "f0.25", "synthetic", 1) == {
        "fraction": 0.25, "model": "models/synthetic/gdn-ohm-gdn-ohm.pt", "threads": 1}
    assert plan.job_params("linerwkv-arith", "XS", "synthetic", 2) == {
        "coder": "arith", "model": "models/synthetic/linerwkv-XS.pt", "threads": 2}
    assert plan.train_settings("gdn-gain")["lambdas"] == [0.1, 1.0, 10.0]
    assert plan.train_settings("gdn-ohm")["ohm_symbols"] == 32  # the codec's default
    assert plan.train_settings("gdn", "l1")["lmbda"] == 1.0
    assert plan.model_files() == [
        "models/synthetic/gdn-gain-gdn-gain.pt", "models/synthetic/gdn-gdn-l0.1.pt",
        "models/synthetic/gdn-gdn-l1.pt", "models/synthetic/gdn-gdn-l10.pt",
        "models/synthetic/gdn-ohm-gdn-ohm.pt", "models/synthetic/linerwkv-XS.pt"]
    assert plan.shard_paths(points[0], 0) == {
        "bitstreams": "results/bitstreams/synthetic/jpegls/-/d0/shard0",
        "timings": "results/bitstreams/synthetic/jpegls/-/d0/shard0.timings.csv",
        "band_bits": "results/bitstreams/synthetic/jpegls/-/d0/shard0.band_bits.csv",
        "metrics": "results/metrics/synthetic/jpegls/-/d0/shard0.csv"}


def test_default_figures_read_evaluated_points():
    figures = plan_of(DEFAULT).figures
    # every label at delta 0 whose codec reports per-band bits; linerwkv at its smallest size
    assert figures.band_labels == ["jpegls", "jpeg2000", "jpegxl", "ccsds123", "ccsds123-arith",
                                   "linerwkv-arith", "linerwkv-ccsds"]
    assert figures.model("linerwkv-arith") == "XS"
    assert figures.shard_files("linerwkv-arith", 0, "band_bits") == [
        "results/bitstreams/synthetic/linerwkv-arith/XS/d0/shard0.band_bits.csv"]
    assert (figures.image_label, figures.image_delta) == ("ccsds123", 10)
    assert figures.references == ["ccsds123", "klt", "jpegxl-lossy", "avif", "jpeg2000-lossy"]
    assert figures.signature_labels == ["gdn", "gdn-gain", "gdn-ohm", "coolchic", "klt",
                                        "jpegxl-lossy", "avif", "jpeg2000-lossy"]
    sources = figures.signature_sources()
    assert sources["gdn-gain"]["models"]["g0.5"] == {
        "params": {"level": 0.5, "model": "models/synthetic/gdn-gain-gdn-gain.pt", "threads": 1},
        "bitstreams": ["results/bitstreams/synthetic/gdn-gain/g0.5/d0/shard0"]}
    folders, models = figures.signature_inputs()
    assert len(folders) == 3 + 5 + 5 + 3 + 4 + 3 + 3 + 3  # one shard per point
    assert "models/synthetic/gdn-gdn-l1.pt" in models
    bad = dict(DEFAULT, figures={"spectral_signature": {"codecs": ["jpegls"]}})
    assert "jpegls is not the label of a lossy codec" in refused(bad)
    assert plan_of(dict(DEFAULT, figures={"reference": "klt"})).figures.references == [
        "klt", "jpegxl-lossy", "avif", "jpeg2000-lossy"]  # each once
    bad = dict(DEFAULT, figures={"lossy_references": ["kl"]})
    assert refused(bad).startswith("figures.lossy_references: kl is not a codec label")


def test_figures_section_is_used_and_checked():
    figures = {"reference": "jpegls", "dataset": "tiny", "patch": "synth-test-0001",
               "band_rates": {"codecs": ["jpeg2000"], "delta": 0},
               "error_image": {"codec": "jpegls", "delta": 2, "band": 3}}
    plan = plan_of(dict(TINY, figures=figures))
    assert plan.figures.band_labels == ["jpeg2000"]
    assert (plan.figures.image_label, plan.figures.image_delta, plan.figures.band) == (
        "jpegls", 2, 3)
    # without a figures section: the first near-lossless label at its delta nearest 10
    plan = plan_of(TINY)
    assert (plan.figures.image_label, plan.figures.image_delta) == ("jpegls", 2)
    bad = dict(TINY, figures={"band_rates": {"codecs": ["jpegls", "nope"]}})
    assert refused(bad) == "figures: nope is not a codec label (labels: jpegls, jpeg2000)"
    # the figures show evaluated points only: nothing is encoded for them
    bad = dict(TINY, figures={"band_rates": {"codecs": ["jpeg2000"], "delta": 2}})
    assert "codec jpeg2000 is not evaluated at delta 2 (deltas: 0)" in refused(bad)
    bad = dict(TINY, figures={"error_image": {"codec": "jpegls", "delta": 10}})
    assert "figures.error_image.delta: codec jpegls is not evaluated at delta 10" in refused(bad)
    assert "is not a dataset" in refused(dict(TINY, figures={"dataset": "nope"}))


@pytest.mark.parametrize("change, message", [
    ({"codecs": {"jpeg-ls": {}}}, "codecs.jpeg-ls: no codec of that name (did you mean 'jpegls'?"),
    ({"codecs": {"near": {"codec": "jpegsl"}}}, "jpegsl"),
    ({"codecs": {"j": {"codec": "jpegxl", "params": {"efort": 3}}}},
     "codecs.j.params: codec jpegxl has no parameter efort (known: effort)"),
    ({"datasets": {"tifs": {"kind": "geotiff_folder", "path": "nowhere"}}},
     "datasets.tifs.path: nowhere: folder not found"),
    ({"datasets": {"tifs": {"kind": "geotiff_folder", "path": "empty"}}},
     "datasets.tifs.path: empty: no files match '*.tif'"),
    ({"datasets": {"tifs": {"kind": "geotiff_folder", "path": "empty",
                            "mosaics": {"a": ["x.tif"]}}}},
     "datasets.tifs.path: empty: mosaic tiles not found: x.tif"),
    ({"evaluation": {"shards": 0}}, "shards"),
])
def test_config_mistakes_are_refused(tmp_path, change, message):
    (tmp_path / "empty").mkdir()
    assert message in refused({**TINY, **change}, root=tmp_path)


@pytest.mark.parametrize(("entry", "message"), [
    ({"codec": "gdn"}, "codecs.bad: codec gdn needs lambdas"),
    ({"codec": "coolchic"}, "codecs.bad: codec coolchic needs lambdas"),
    ({"codec": "coolchic", "lambdas": [1], "preset": "tiny"},
     "preset do not apply to codec coolchic"),
    ({"codec": "coolchic", "lambdas": [1], "params": {"lam": 2}}, "lam is set by the workflow"),
    ({"codec": "gdn", "lambdas": [1], "deltas": [2]}, "codec gdn is lossy, only delta 0"),
    ({"codec": "jpegls", "lambdas": [1]},
     "codecs.bad: lambdas only apply to codecs coolchic, gdn, gdn-gain, gdn-ohm"),
    ({"codec": "jpegls", "sizes": ["XS"]}, "codecs.bad: sizes only apply to codecs evaluated"),
    ({"codec": "gdn", "lambdas": [1], "train_dataset": "nope"}, "'nope' is not a dataset"),
    ({"codec": "gdn", "lambdas": [1], "train_dataset": {"other": "tiny"}},
     "'other' is not a dataset"),
    ({"codec": "gdn-gain", "lambdas": [1, 10]}, "codec gdn-gain needs levels_eval"),
    ({"codec": "gdn-gain", "lambdas": [1], "levels_eval": [0]}, "needs at least 2 lambdas"),
    ({"codec": "gdn-gain", "lambdas": [1, 10], "levels_eval": [0, 1.5]},
     "levels_eval: 1.5 is not in [0, 1]"),
    ({"codec": "gdn-gain", "lambdas": [1, 10], "levels_eval": [0], "params": {"level": 1}},
     "level is set by the workflow"),
    ({"codec": "gdn", "lambdas": [1], "levels_eval": [0]},
     "levels_eval only applies to codec gdn-gain"),
    ({"codec": "gdn-ohm", "lambdas": [1, 10, 100], "fractions_eval": [0]},
     "codec gdn-ohm needs 2 lambdas"),
    ({"codec": "gdn-ohm", "lambdas": [1, 10]}, "codec gdn-ohm needs fractions_eval"),
    ({"codec": "gdn-ohm", "lambdas": [1, 10], "fractions_eval": [0, 1.5]},
     "1.5 is greater than the maximum of 1"),
    ({"codec": "gdn-ohm", "lambdas": [1, 10], "fractions_eval": [0], "levels_eval": [0]},
     "levels_eval does not apply to codec gdn-ohm"),
    ({"codec": "gdn-ohm", "lambdas": [1, 10], "fractions_eval": [0],
      "params": {"fraction": 1}}, "fraction is set by the workflow"),
])
def test_bad_learned_entries_are_refused(entry, message):
    assert message in refused(dict(TINY, codecs={"bad": entry}))


def test_linerwkv_entries():
    config = dict(TINY, codecs={"lw": {"codec": "linerwkv"}})
    assert ("codecs.lw uses codec 'linerwkv', which needs trained models: add a linerwkv: "
            "section") in refused(config)
    config["linerwkv"] = LINERWKV
    assert plan_of(config).model_files() == ["models/tiny/linerwkv-XS.pt"]
    config["codecs"] = {"lw": {"codec": "linerwkv", "params": {"model": "m.pt"}}}
    assert refused(config) == "codecs.lw.params: model is set by the workflow"
    config["codecs"] = {"lw": {"codec": "linerwkv", "sizes": ["L"]}}
    assert refused(config) == "codecs.lw.sizes: L not in linerwkv.sizes"
    config["linerwkv"] = {"sizes": ["XS"]}
    assert "linerwkv: sizes XS are trained: give train_dataset" in refused(config)
    config["linerwkv"] = dict(LINERWKV, train_dataset={"other": "tiny"})
    assert "linerwkv.train_dataset: 'other' is not a dataset" in refused(config)


def test_released_weights_and_entry_sizes():
    config = dict(TINY, deltas=[0], codecs={
        "jpegls": {}, "net": {"codec": "linerwkv", "sizes": ["S"]},
        "lms": {"codec": "linerwkv-lms"}},
        linerwkv={"weights": "release", "sizes": ["XS", "S"]})
    plan = plan_of(config)
    assert [(p.label, p.model) for p in plan.points()] == [
        ("jpegls", "-"), ("net", "S"), ("lms", "XS"), ("lms", "S")]
    assert plan.trained_sizes() == []
    assert plan.model_files() == ["models/release/linerwkv-S.pt",
                                  "models/release/linerwkv-XS.pt"]
    config["linerwkv"] = {"weights": {"S": "release"}, "sizes": ["XS", "S"],
                          "train_dataset": "tiny"}
    assert plan_of(config).model_files() == ["models/release/linerwkv-S.pt",
                                             "models/tiny/linerwkv-XS.pt"]
    config["datasets"] = {"release": TINY["datasets"]["tiny"]}
    assert "the name 'release' is reserved" in refused(config)


def test_every_codec_declares_what_the_workflow_sets():
    """The workflow's parameters are parameters of the codec, and a per-entry codec names
    its rate-point list, which the schema accepts."""
    keys = SCHEMA["$defs"]["codec"]["properties"]
    for name in available_codecs():
        cls = codec_class(name)
        assert cls.workflow_params() <= set(cls.defaults), name
        if cls.training is Training.PER_ENTRY:
            assert cls.rate_points is not None, name
        elif cls.rate_points is not None:  # a lossy codec whose rate a parameter sets
            assert cls.training is Training.NONE and cls.lossy, name
        if cls.rate_points:
            assert cls.rate_points.key in keys


def test_gpu_requests():
    plan = plan_of(DEFAULT)
    assert plan.train_gpus({"device": "auto"}) == 0
    assert plan.train_gpus({"device": "cuda"}) == 1
    plan = plan_of(dict(DEFAULT, train_gpu=True))
    assert plan.train_gpus({}) == 1 and plan.train_gpus({"device": "cpu"}) == 0


def test_trained_basis_entries_get_the_basis_of_their_training_dataset():
    datasets = {name: {**TINY["datasets"]["tiny"], "seed": seed}
                for name, seed in (("a", 1), ("b", 2))}
    config = {**TINY, "datasets": datasets, "codecs": {
        "klt": {"points": [100]},
        "klt-trained": {"codec": "klt", "trained_basis": True, "points": [100],
                        "train_dataset": {"a": "b", "b": "a"}},
        "cc": {"codec": "coolchic", "trained_basis": True, "lambdas": [1],
               "params": {"basis": 3, "iterations": 10}}}}
    plan = plan_of(config)
    assert plan.job_params("klt-trained", "s100", "a", 1) == {
        "step": 100, "basis_model": "models/b/spectral-basis.npz"}
    assert plan.job_params("klt", "s100", "a", 1) == {"step": 100}
    assert plan.model_inputs("cc", "l1", "b") == ["models/b/spectral-basis.npz"]
    assert plan.job_params("cc", "l1", "b", 1)["basis_model"] == "models/b/spectral-basis.npz"
    assert plan.model_files() == ["models/a/spectral-basis.npz", "models/b/spectral-basis.npz"]


@pytest.mark.parametrize(("entry", "message"), [
    ({"trained_basis": True}, "codecs.jpegls: trained_basis only applies to codecs"),
    ({"codec": "coolchic", "trained_basis": True, "lambdas": [1]},
     "codecs.jpegls: codec 'coolchic': basis_model needs basis > 0"),
    ({"codec": "klt", "points": [10], "train_dataset": "tiny"},
     "codecs.jpegls: train_dataset only apply to codecs"),
    ({"codec": "klt", "points": [10], "trained_basis": True, "train_dataset": "nope"},
     "codecs.jpegls.train_dataset: 'nope' is not a dataset"),
    ({"codec": "klt", "points": [10], "params": {"basis_model": "x.npz"}},
     "codecs.jpegls.params: basis_model is set by the workflow"),
])
def test_trained_basis_mistakes_are_refused(entry, message):
    assert message in refused({**TINY, "codecs": {"jpegls": entry}})
