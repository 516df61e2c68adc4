# Configuration loading and validation, and the thin input functions the rules share. The
# logic lives in hsicomp.evaluation.plan (which jobs a configuration means, and its checks)
# and hsicomp.evaluation.records (whether evaluated shards still match their files).

import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.logging import logger
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import update_config, validate

# The checkout holding these rules: the workflow's own folder, also when another workflow
# uses it as a module (where workflow.basedir is that workflow's folder).
ROOT = Path(str(workflow.current_basedir)).parent
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
# The package of this checkout (the rules import it while parsing).
sys.path.insert(0, str(ROOT / "src"))

from hsicomp.codecs.base import Training
from hsicomp.evaluation.plan import (
    BAND_BITS,
    BITSTREAMS,
    INVALIDATED,
    METRICS,
    RELEASE_CHECKPOINT,
    TIMINGS,
    Plan,
    Point,
    apply_dataset_defaults,
)
from hsicomp.evaluation.records import shard_problem

if not workflow.config_settings.configfiles and "datasets" not in config:
    # The built-in default applies only when no configuration is given (a config file, or
    # the `config:` of a module declaration); --config overrides apply on top of it.
    with open(ROOT / "config" / "config.yaml") as _f:
        _default = yaml.safe_load(_f)
    update_config(_default, dict(config))
    config.clear()
    config.update(_default)

validate(config, SCHEMA)
with open(SCHEMA) as _f:
    apply_dataset_defaults(config, yaml.safe_load(_f))
PLAN = Plan(config)
SHARDS = PLAN.shards
FIGURES = PLAN.figures

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


class Untracked:
    """A rule parameter that does not change the rule's output (an address, a retry count, a
    time or size bound): Snakemake's params rerun trigger compares only parameters of
    builtin types, so changing this one does not make the job (and all after it) run again.
    """

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return str(self.value)


# An Untracked parameter of the report's rules: naming the configuration differently
# reruns nothing.
PROVENANCE = Untracked(PLAN.provenance(workflow.config_settings.configfiles))


def quoted_json(value):
    return shlex.quote(json.dumps(value, sort_keys=True))


def labels_of(*kinds):
    """Regex matching exactly the codec labels whose codec's training is one of ``kinds``."""
    labels = [re.escape(label) for label in PLAN.labels_with(*kinds)]
    return "|".join(labels) if labels else "(?!)"


def release_checkpoint(wildcards):
    return RELEASE_CHECKPOINT.format(lower=wildcards.size.lower())


def model_input(wildcards):
    """The model files an encode or verify job needs ([] for codecs without one)."""
    PLAN.check_model(wildcards.codec, wildcards.model)
    return PLAN.model_inputs(wildcards.codec, wildcards.model, wildcards.dataset)


def codec_params(wildcards, threads):
    """Codec parameters of an encode or verify job, as quoted JSON."""
    return quoted_json(
        PLAN.job_params(wildcards.codec, wildcards.model, wildcards.dataset, threads)
    )


# invalidate_shards stamp -> the problems it handles (filled by aggregate_inputs)
_PROBLEMS = {}


def aggregate_inputs(wildcards):
    """The metrics CSV of every shard that still matches its record, and for the others
    the invalidate_shards output (after which their metrics are built again)."""
    files, problems = [], []
    hash_all = not os.path.exists(rules.aggregate.output.rd)
    for point in PLAN.points():
        for shard in range(SHARDS):
            paths = PLAN.shard_paths(point, shard)
            problem = shard_problem(paths, hash_all=hash_all)
            if problem is None:
                files.append(paths["metrics"])
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


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    codec=r"[a-z0-9_-]+",
    model=r"[A-Za-z0-9_.-]+",
    delta=r"\d+",
    shard=r"\d+",
