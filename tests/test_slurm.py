"""The Slurm profile (workflow/profiles/slurm): its settings and the resources it gives the
jobs (no Slurm needed), and a small workflow run on a real one-node Slurm cluster
(`make slurm-test` installs Slurm, starts the cluster, runs this file and stops it)."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, read_csv, run_snakemake, tool_env, write_config

PROFILE = REPO / "workflow" / "profiles" / "slurm"
ENV_NAMES = ("SBATCH_ACCOUNT", "SBATCH_PARTITION", "HSICOMP_SLURM_GPU_PARTITION",
             "HSICOMP_SLURM_GPU_MODEL")
TRAIN_RULES = ("train", "train_gdn", "train_gdn_curve")
#: The cluster name that tests/slurm/cluster.sh gives its one-node cluster.
TEST_CLUSTER = "hsicomp-test"

needs_plugin = pytest.mark.skipif(
    importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
    reason="snakemake-executor-plugin-slurm is not installed (see requirements.lock)")


def profile_args(monkeypatch, **env) -> dict:
    """The profile as Snakemake reads it (option -> value), with only ``env`` set of the
    variables it reads."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with open(PROFILE / "profile.yaml") as f:
        return dict(ProfileConfigFileParser().parse(f))


def test_profile_has_its_defaults_and_no_placeholders(monkeypatch):
    args = profile_args(monkeypatch)
    assert args["executor"] == "slurm"
    assert args["slurm-status-command"] == "squeue"
    assert args["default-resources"] == ["mem_mb=4000", "runtime=60"]
    assert "set-resources" not in args
    # no caps on memory or GPUs (profiles/default has them for local runs)
    assert sorted(args["resources"]) == ["downloads=2", "dvc=1"]
    text = repr(args)
    assert "<" not in text and "cpus_per_task" not in text


def test_account_and_partitions_come_from_the_environment(monkeypatch):
    args = profile_args(monkeypatch, SBATCH_ACCOUNT="proj1", SBATCH_PARTITION="cpu",
                        HSICOMP_SLURM_GPU_PARTITION="gpu")
    # added to the defaults, which stay
    assert args["default-resources"] == ["mem_mb=4000", "runtime=60", "slurm_account=proj1",
                                         "slurm_partition=cpu"]
    assert sorted(args["set-resources"]) == sorted(f"{rule}:slurm_partition=gpu"
                                                   for rule in TRAIN_RULES)
    args = profile_args(monkeypatch, HSICOMP_SLURM_GPU_MODEL="a100")
    assert sorted(args["set-resources"]) == sorted(f"{rule}:gpu_model=a100"
                                                   for rule in TRAIN_RULES)
    assert args["default-resources"] == ["mem_mb=4000", "runtime=60"]


def test_profiles_link_is_the_workflow_profiles():
    # the profiles/ next to the Snakefile (where Snakemake looks for profiles/default) is a
    # link, so that there is one copy of each profile
    assert (REPO / "profiles").is_symlink()
    assert (REPO / "profiles").resolve() == (REPO / "workflow" / "profiles").resolve()


def test_downloads_are_local_rules(tmp_path):
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[REPO / "config" / "hyspecnet.yaml"]),
            snakefile=REPO / "Snakefile", workdir=tmp_path)._workflow
        local = {rule.name for rule in workflow.rules
                 if rule.name in workflow._localrules or rule.norun}
    assert {"download_archive", "fetch_release", "invalidate_shards"} <= local
    assert not local & {"extract_archive", "prepare_dataset", "encode_shard", "verify_shard",
                        "aggregate", *TRAIN_RULES}


def dry_run_jobs(tmp_path: Path, *args: str) -> tuple[list[dict], str]:
    """The jobs of a dry run through the Slurm profile: rule, threads, resources, group."""
    proc = run_snakemake(tmp_path, "-n", "--workflow-profile", str(PROFILE), "--cores", "64",
                         *args)
    out = proc.stdout + proc.stderr
    jobs, group = [], None
    for line in out.splitlines():
        if m := re.search(r"\] Group job (\S+) \(", line):
            group = m[1]
        elif m := re.fullmatch(r"(\s*)(?:local)?rule (\w+):", line):
            # the jobs of a group job are indented under its header
            jobs.append({"rule": m[2], "threads": 1, "resources": {},
                         "group": group if m[1] else None})
        elif m := re.fullmatch(r"\s*threads: (\d+)", line):
            jobs[-1]["threads"] = int(m[1])
        elif m := re.fullmatch(r"\s*resources: (.*)", line):
            jobs[-1]["resources"] = dict(item.split("=", 1) for item in m[1].split(", "))
    return jobs, out


@needs_plugin
def test_dry_run_resources_of_the_paper_grid(tmp_path):
    """The HySpecNet configuration with every LineRWKV size trained: GPU requests, threads,
    memory and wall time as the rules and config give them, one job per shard."""
    import yaml

    config = yaml.safe_load((REPO / "config" / "hyspecnet.yaml").read_text())
    config["linerwkv"]["weights"] = "train"
    config["evaluation"]["shards"] = 2  # the grid's 127 points, in 2 shards each (not 32)
    cfg = write_config(tmp_path / "hsn.yaml", config)
    jobs, out = dry_run_jobs(tmp_path, "--configfile", str(cfg))
    # the workflow profile replaces profiles/default (which caps memory at 16000)
    assert "profiles/default" not in out
    by_rule = {}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    for job in by_rule["train"]:
        assert job["threads"] == 8
        assert job["resources"]["gpu"] == "1"
        assert job["resources"]["mem_mb"] == "32000"
        assert job["resources"]["runtime"] == "10080"
    for rule in ("train_gdn", "train_gdn_curve"):
        for job in by_rule[rule]:
            assert job["threads"] == 8 and job["resources"]["gpu"] == "1"
    assert len(by_rule["train"]) == 4 and len(by_rule["train_gdn"]) == 5
    assert [job["resources"]["mem_mb"] for job in by_rule["prepare_dataset"]] == ["8000"]
    assert [job["resources"]["runtime"] for job in by_rule["prepare_dataset"]] == ["720"]
    # every encode and verify job is in a shard group: 254 groups of two
    assert len(by_rule["encode_shard"]) == len(by_rule["verify_shard"]) == 254
    assert all(job["group"] == "shard" for job in by_rule["encode_shard"])
    assert all(job["group"] == "shard" for job in by_rule["verify_shard"])
    assert out.count("Group job shard") == 254
    runtimes = {(job["threads"], job["resources"]["runtime"]) for job in by_rule["encode_shard"]}
    assert (4, "720") in runtimes  # coolchic
    assert (2, "60") in runtimes  # linerwkv


@needs_plugin
@pytest.mark.parametrize(("device", "train_gpu", "gpus"), [
    ("cuda", False, "1"), ("auto", True, "1"), ("auto", False, "0"), ("cpu", True, "0")])
def test_training_asks_for_a_gpu_by_device_and_train_gpu(tmp_path, device, train_gpu, gpus):
    config = {
        "datasets": {"tiny": {"kind": "synthetic", "seed": 5, "bands": 6, "rows": 12,
                              "cols": 10, "bit_depth": 14,
                              "patches": {"train": 1, "val": 1, "test": 3}}},
        "deltas": [0],
        "codecs": {"gdn": {"codec": "gdn", "lambdas": [1], "threads": 1,
                           "settings": {"device": device, "threads": 3}}},
        "linerwkv": {"train_dataset": "tiny", "sizes": ["XS"], "threads": 2,
                     "settings": {"device": device}},
        "train_gpu": train_gpu,
    }
    cfg = write_config(tmp_path / "c.yaml", config)
    jobs, _ = dry_run_jobs(tmp_path, "models", "--configfile", str(cfg))
    found = {job["rule"]: (job["threads"], job["resources"]["gpu"]) for job in jobs
             if job["rule"] in TRAIN_RULES}
    assert found == {"train": (2, gpus), "train_gdn": (3, gpus)}


# ---------------------------------------------------------------------------------------
# A real Slurm cluster

def _slurm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def slurm_cluster() -> dict:
    """The running Slurm cluster (name, largest node's CPUs and MB), or a pytest skip
    saying what is missing; with HSICOMP_SLURM_TEST=1 (`make slurm-test`) a failure."""
    required = os.environ.get("HSICOMP_SLURM_TEST") == "1"
    not_here = pytest.fail if required else pytest.skip
    missing = [tool for tool in ("sbatch", "squeue", "sinfo", "scontrol")
               if shutil.which(tool) is None]
    if missing:
        not_here(f"Slurm absent: no {', '.join(missing)} on PATH (`make slurm-test` "
                 f"installs Slurm and starts a one-node cluster)")
    info = _slurm("sinfo", "--noheader", "-o", "%c %m")
    if info.returncode != 0 or not info.stdout.strip():
        said = (info.stderr.strip().splitlines() or ["no nodes"])[-1]
        not_here(f"no Slurm cluster running (sinfo: {said}; `make slurm-test` starts one)")
    config = _slurm("scontrol", "show", "config").stdout
    name = re.search(r"^ClusterName\s*=\s*(\S+)", config, re.M)
    name = name[1] if name else "?"
    if name != TEST_CLUSTER and not required:
        pytest.skip(f"the Slurm cluster {name!r} is not the test cluster of "
                    f"tests/slurm/cluster.sh (set HSICOMP_SLURM_TEST=1 to submit to it)")
    cpus, mem = max((int(c.rstrip("+")), int(m.rstrip("+")))
                    for c, m in (line.split() for line in info.stdout.splitlines()))
    return {"name": name, "cpus": cpus, "mem_mb": mem}


#: Job states squeue reports for jobs that will never start on this cluster.
NEVER_STARTS = ("PartitionConfig", "BadConstraints", "PartitionNodeLimit",
                "ReqNodeNotAvail", "Resources")


def _run_jobs(name: str) -> list[dict]:
    """This run's Slurm jobs (every state squeue still knows)."""
    proc = _slurm("squeue", "--noheader", "--states=all", "--name", name,
                  "-o", "%i|%T|%r|%C|%m|%l|%k")
    keys = ("id", "state", "reason", "cpus", "mem", "time", "comment")
    return [dict(zip(keys, line.split("|"), strict=True))
            for line in proc.stdout.splitlines() if line.strip()]


def run_through_slurm(workdir: Path, *args: str, timeout: int = 900):
    """Run the workflow through the Slurm profile. Fails naming the job and squeue's reason
    when a job of the run stays pending for a reason that never clears (Snakemake itself
    waits silently), or when the run takes over ``timeout`` seconds."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d",
           str(workdir), "--workflow-profile", str(PROFILE), *args]
    log = workdir / "slurm-run.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=tool_env(), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        name, pending_since = None, {}
        while proc.poll() is None:
            time.sleep(2)
            if name is None:
                m = re.search(r"SLURM run ID: (\S+)", log.read_text())
                name = m[1] if m else None
            for job in _run_jobs(name) if name else []:
                if job["state"] != "PENDING" or job["reason"] not in NEVER_STARTS:
                    pending_since.pop(job["id"], None)
                    continue
                first = pending_since.setdefault(job["id"], time.monotonic())
                # "Resources" also means "busy": allow a while before calling it stuck
                if job["reason"] != "Resources" or time.monotonic() - first > 120:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"Slurm job {job} of the run never starts\n"
                                f"{log.read_text()[-3000:]}")
            if time.monotonic() - start > timeout:
                proc.kill()
                proc.wait()
                pytest.fail(f"the Slurm run took over {timeout} s; jobs: {_run_jobs(name)}\n"
                            f"{log.read_text()[-3000:]}")
    text = log.read_text()
    if proc.returncode != 0:
        pytest.fail(f"the Slurm run failed ({proc.returncode}):\n{text[-6000:]}")
    name = name or re.search(r"SLURM run ID: (\S+)", text)[1]
    return text, _run_jobs(name), time.monotonic() - start


@needs_plugin
def test_small_workflow_runs_through_slurm(tmp_path):
    """Data, one training job, the encode and verify jobs of two codecs in two shards and
    rd_all.csv, each job a Slurm job of the one-node test cluster (no accounting)."""
    cluster = slurm_cluster()
    if cluster["mem_mb"] < 8000:
        pytest.skip(f"the largest Slurm node has {cluster['mem_mb']} MB; the data and "
                    f"training jobs ask for 8000")
    threads = min(2, cluster["cpus"])
    config = {
        "datasets": {"tiny": {"kind": "synthetic", "seed": 5, "bands": 6, "rows": 12,
                              "cols": 10, "bit_depth": 14,
                              "patches": {"train": 1, "val": 1, "test": 3}}},
        "deltas": [0, 2],
        "codecs": {"jpegls": {},
                   "gdn": {"codec": "gdn", "lambdas": [1], "preset": "tiny", "threads": 1,
                           "settings": {"epochs": 2, "batch": 1, "crop": 8,
                                        "threads": threads}}},
        "evaluation": {"shards": 2},
    }
    cfg = write_config(tmp_path / "tiny.yaml", config)
    # the profile as it is; only the first status query comes sooner than its 40 s
    text, jobs, seconds = run_through_slurm(
        tmp_path, "results/rd_all.csv", "--configfile", str(cfg),
        "--slurm-init-seconds-before-status-checks", "5")
    rd = read_csv(tmp_path / "results" / "rd_all.csv")
    assert [(r["codec"], r["model"], r["delta"]) for r in rd] == [
        ("gdn", "l1", ""), ("jpegls", "-", "0"), ("jpegls", "-", "2")]
    assert all(r["all_ok"] == "true" and r["patches"] == "3" for r in rd)
    assert "profiles/default" not in text
    # prepare, train_gdn, 3 x 2 shard groups (encode + verify) and aggregate
    assert len(jobs) == 9, jobs
    assert all(job["state"] == "COMPLETED" for job in jobs), jobs
    by_comment = {}
    for job in jobs:
        by_comment.setdefault(job["comment"].split("_wildcards_")[0], []).append(job)
    assert len(by_comment["rule_shard_encode_shard_verify_shard"]) == 6
    # the two jobs of a shard run one after the other: wall time 60 + 60 minutes
    assert {job["time"] for job in by_comment["rule_shard_encode_shard_verify_shard"]} \
        == {"2:00:00"}
    (train,) = by_comment["rule_train_gdn"]
    assert (int(train["cpus"]), train["mem"], train["time"]) == (threads, "8000M",
                                                                   "2-00:00:00")
    (prepare,) = by_comment["rule_prepare_dataset"]
    assert (prepare["mem"], prepare["time"]) == ("8000M", "12:00:00")
    print(f"\n{len(jobs)} Slurm jobs, {seconds:.0f} s")
