# Training stage: one LineRWKV predictor per size, one gdn transform codec per gdn entry
# and lambda, one model per gdn-gain / gdn-ohm entry and the spectral basis of the entries
# with trained_basis, on the training split of one dataset. Interrupted jobs resume from
# <model>.pt.state on rerun. LineRWKV sizes with
# `weights: release` are not trained: the authors' checkpoints are fetched and converted.


rule train:
    input:
        manifest="data/{dataset}/manifest.csv",
        train="data/{dataset}/train.h5",
        val="data/{dataset}/val.h5",
    output:
        model="models/{dataset}/linerwkv-{size}.pt",
        log_csv="models/{dataset}/linerwkv-{size}.log.csv",
        curve=report(
            "models/{dataset}/linerwkv-{size}.loss.png",
            caption="../workflow/report/loss_curve.rst",
            category="Training",
        ),
    log:
        "logs/train/{dataset}/{size}.log",
    benchmark:
        "logs/benchmarks/train/{dataset}/{size}.tsv"
    wildcard_constraints:
        size=r"XS|S|M|L",
    # the jobs that code with the model wait for it: start it first
    priority: 10
    conda:
        ENV
    threads: lambda w: config["linerwkv"]["threads"]
    resources:
        gpu=lambda w: PLAN.train_gpus(PLAN.linerwkv_settings(w.size)),
        mem_mb=lambda w: config["linerwkv"]["mem_mb"],
        runtime=lambda w: config["linerwkv"]["runtime"],
    params:
        settings=lambda w: quoted_json(PLAN.linerwkv_settings(w.size)),
    shell:
        "python -m hsicomp train --data data/{wildcards.dataset} --out {output.model:q}"
        " --settings {params.settings} --threads {threads} > {log:q} 2>&1"


rule train_gdn:
    """One model per (codec entry, lambda) of the per-lambda codecs (gdn), on the training
    split of a dataset."""
    input:
        manifest="data/{dataset}/manifest.csv",
        train="data/{dataset}/train.h5",
        val="data/{dataset}/val.h5",
    output:
        model="models/{dataset}/{name}-{label}-{tag}.pt",
        log_csv="models/{dataset}/{name}-{label}-{tag}.log.csv",
    log:
        "logs/train_gdn/{dataset}/{name}-{label}-{tag}.log",
    benchmark:
        "logs/benchmarks/train_gdn/{dataset}/{name}-{label}-{tag}.tsv"
    wildcard_constraints:
        name="|".join(PLAN.codec_names_with(Training.PER_LAMBDA)),
        label=labels_of(Training.PER_LAMBDA),
        tag=r"l[0-9.]+",
    priority: 5
    conda:
        ENV
    threads: lambda w: PLAN.train_threads(w.label)
    resources:
        gpu=lambda w: PLAN.train_gpus(PLAN.train_settings(w.label, w.tag)),
        mem_mb=8000,
        runtime=2880,
    params:
        settings=lambda w: quoted_json(PLAN.train_settings(w.label, w.tag)),
    shell:
        "python -m hsicomp train-gdn --data data/{wildcards.dataset} --out {output.model:q}"
        " --settings {params.settings} --threads {threads} > {log:q} 2>&1"


rule train_gdn_curve:
    """One model per entry of the per-entry codecs (gdn-gain: gain units, one level per
    lambda; gdn-ohm: adaptive-rate One-Hot-Max) and dataset."""
    input:
        manifest="data/{dataset}/manifest.csv",
        train="data/{dataset}/train.h5",
        val="data/{dataset}/val.h5",
    output:
        model="models/{dataset}/{curve}-{label}.pt",
        log_csv="models/{dataset}/{curve}-{label}.log.csv",
    log:
        "logs/train_gdn/{dataset}/{curve}-{label}.log",
    benchmark:
        "logs/benchmarks/train_gdn/{dataset}/{curve}-{label}.tsv"
    wildcard_constraints:
        curve="|".join(PLAN.codec_names_with(Training.PER_ENTRY)),
        label=labels_of(Training.PER_ENTRY),
    priority: 5
    conda:
        ENV
    threads: lambda w: PLAN.train_threads(w.label)
    resources:
        gpu=lambda w: PLAN.train_gpus(PLAN.train_settings(w.label)),
        mem_mb=8000,
        runtime=2880,
    params:
        settings=lambda w: quoted_json(PLAN.train_settings(w.label)),
    shell:
        "python -m hsicomp train-gdn --data data/{wildcards.dataset} --out {output.model:q}"
        " --settings {params.settings} --threads {threads} > {log:q} 2>&1"


rule train_basis:
    """The spectral basis (KLT) of a dataset's training split, for the klt and coolchic
    entries with trained_basis: true."""
    input:
        manifest="data/{dataset}/manifest.csv",
        train="data/{dataset}/train.h5",
    output:
        "models/{dataset}/spectral-basis.npz",
    log:
        "logs/train_basis/{dataset}.log",
    priority: 10
    conda:
        ENV
    resources:
        mem_mb=8000,
    shell:
        "python -m hsicomp train-basis --data data/{wildcards.dataset} --out {output:q}"
        " > {log:q} 2>&1"


ruleorder: import_release > train


rule fetch_release:
    """A released LineRWKV checkpoint, fetched from the authors' repository by DVC (the
    import is pinned to one commit; needs network access)."""
    output:
        "checkpoints/linerwkv-release/{lower}.pth",
    log:
        "logs/fetch_release/{lower}.log",
    wildcard_constraints:
        lower=r"xs|s|m|l",
    localrule: True
    conda:
        "../envs/dvc-tool.yaml"
    resources:
        dvc=1,
    shell:
        "dvc pull {output:q}.dvc > {log:q} 2>&1"


rule import_release:
    """A LineRWKV size with the authors' published weights (linerwkv.weights: release):
    the checkpoint, checked against the published sha256 and converted (no training)."""
    input:
        release_checkpoint,
    output:
        "models/release/linerwkv-{size}.pt",
    log:
        "logs/import_release/{size}.log",
    wildcard_constraints:
        size=r"XS|S|M|L",
    conda:
        ENV
    shell:
        "python -m hsicomp import-checkpoint {input:q} {output:q} --release {wildcards.size}"
        " > {log:q} 2>&1"


rule models:
    """Every trained model of the configuration."""
    input:
        PLAN.model_files(),
