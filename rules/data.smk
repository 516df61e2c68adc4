# Data stage: download and unpack HySpecNet-11k (when asked), then prepare every dataset
# into data/<dataset>/ (BSQ test patches, HDF5 train/val splits, manifest.csv).


rule download_archive:
    output:
        "{root}/archives/{archive}",
    log:
        "logs/download/{root}/{archive}.log",
    wildcard_constraints:
        archive=r"[A-Za-z0-9_.-]+\.tar(\.gz)?",
    retries: 1
    # runs where Snakemake runs (cluster nodes often have no network)
    localrule: True
    conda:
        ENV
    resources:
        downloads=1,
    params:
        # the md5 defines the archive; the address and the bounds do not change it
        md5=lambda w: PLAN.download_root(w.root)["archives"][w.archive],
        url=lambda w: Untracked(PLAN.archive_url(w.root, w.archive)),
        retries=lambda w: Untracked(PLAN.download_root(w.root)["retries"]),
        max_bytes=lambda w: Untracked(PLAN.download_root(w.root)["max_archive_bytes"]),
        deadline=lambda w: Untracked(PLAN.download_root(w.root)["download_deadline"]),
        min_rate=lambda w: Untracked(PLAN.download_root(w.root)["download_min_rate"]),
        rate_window=lambda w: Untracked(PLAN.download_root(w.root)["download_rate_window"]),
    shell:
        "python -m hsicomp download --url {params.url:q} --md5 {params.md5} --out {output:q}"
        " --retries {params.retries} --max-bytes {params.max_bytes} --deadline {params.deadline}"
        " --min-rate {params.min_rate} --rate-window {params.rate_window} > {log:q} 2>&1"


rule extract_archive:
    input:
        "{root}/archives/{archive}",
    output:
        "{root}/.extracted/{archive}.done",
    log:
        "logs/extract/{root}/{archive}.log",
    benchmark:
        "logs/benchmarks/extract/{root}/{archive}.tsv"
    conda:
        ENV
    params:
        max_bytes=lambda w: Untracked(PLAN.download_root(w.root)["max_extracted_bytes"]),
    shell:
        "python -m hsicomp extract {input:q} --dest {wildcards.root:q} --stamp {output:q}"
        " --max-bytes {params.max_bytes} > {log:q} 2>&1"


rule prepare_dataset:
    input:
        lambda w: PLAN.prepare_inputs(w.dataset),
    output:
        manifest="data/{dataset}/manifest.csv",
        test=directory("data/{dataset}/test"),
        train="data/{dataset}/train.h5",
        val="data/{dataset}/val.h5",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare/{dataset}.tsv"
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=720,
    params:
        spec=lambda w: quoted_json(PLAN.prepare_spec(w.dataset)),
    shell:
        "python -m hsicomp prepare --spec {params.spec} --out data/{wildcards.dataset}"
        " --no-progress > {log:q} 2>&1"


rule data:
    """Every dataset of the configuration, prepared."""
    input:
        expand("data/{dataset}/manifest.csv", dataset=config["datasets"]),
