# Evaluation stage: decode every bitstream and compare with the original, then aggregate
# per-patch metrics into rd_all.csv and draw the rate-distortion figure.
#
# A result never outlives its bitstream: the metrics CSV of a shard records each file's
# size and sha256. Whenever aggregate is part of the run (`-n` included), every verified
# shard is checked against that record (sizes of all files; the sha256 of files modified
# after the record, of every file while rd_all.csv is missing); if a file is missing or
# changed, the checkpoint invalidate_shards removes the bitstreams, timings and metrics of
# those shards and rd_all.csv, and Snakemake then encodes and verifies those shards again
# before aggregate. aggregate itself checks every file's sha256 (and removes rd_all.csv
# when one differs, so that the next run rebuilds that shard). The check:
# hsicomp.evaluation.records.shard_problem, called by aggregate_inputs in rules/common.smk.


rule verify_shard:
    input:
        manifest="data/{dataset}/manifest.csv",
        test="data/{dataset}/test",
        bitstreams=BITSTREAMS,
        timings=TIMINGS,
        model=model_input,
    output:
        METRICS,
    log:
        "logs/verify/{dataset}/{codec}/{model}/d{delta}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/verify/{dataset}/{codec}/{model}/d{delta}/shard{shard}.tsv"
    # on a cluster, the encode and verify jobs of one shard run in one job
    group:
        "shard"
    conda:
        ENV
    threads: lambda w: PLAN.threads(w.codec)
    resources:
        mem_mb=4000,
        runtime=lambda w: PLAN.runtime(w.codec),
    params:
        shards=SHARDS,
        codec=lambda w: PLAN.codec_name(w.codec),
        codec_params=codec_params,
        peak=lambda w: PLAN.psnr_peak(w.dataset),
    shell:
        "python -m hsicomp verify-shard --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shards {params.shards} --bitstreams {input.bitstreams:q} --timings {input.timings:q}"
        " --dataset {wildcards.dataset} --codec {params.codec} --label {wildcards.codec}"
        " --model {wildcards.model}"
        " --delta {wildcards.delta} --params {params.codec_params} --peak {params.peak}"
        " --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        aggregate_inputs,
    output:
        rd=report(
            "results/rd_all.csv",
            caption="../workflow/report/rd_all.rst",
            category="Results",
        ),
        per_patch="results/per_patch.csv",
    log:
        "logs/aggregate.log",
    conda:
        ENV
    params:
        provenance=PROVENANCE,
    shell:
        "python -m hsicomp aggregate {input:q} --rd {output.rd:q} --per-patch {output.per_patch:q}"
        " > {log:q} 2>&1"


checkpoint invalidate_shards:
    """Remove the shards whose bitstreams no longer match their record, and the tables that
    describe them; the DAG is then updated, so that those shards are encoded and verified
    again. The output lists the files found wrong."""
    output:
        INVALIDATED,
    log:
        "logs/invalidate_shards/{stamp}.log",
    wildcard_constraints:
        stamp=r"[0-9a-f]{16}",
    localrule: True
    conda:
        ENV
    params:
        reasons=lambda w: [p.reason for p in invalidated(w)],
        paths=lambda w: [path for p in invalidated(w) for path in p.remove],
        tables=[rules.aggregate.output.rd, rules.aggregate.output.per_patch],
    shell:
        "rm -rfv -- {params.paths:q} {params.tables:q} > {log:q} 2>&1"
        " && printf '%s\\n' {params.reasons:q} > {output:q}"


rule plot_rd:
    input:
        "results/rd_all.csv",
    output:
        png=report(
            "results/figures/rd_psnr.png",
            caption="../workflow/report/rd_psnr.rst",
            category="Figures",
        ),
        pdf="results/figures/rd_psnr.pdf",
    log:
        "logs/plot_rd.log",
    conda:
        ENV
    params:
        # dataset names are [A-Za-z0-9_.-]: nothing to quote
        peaks=" ".join(f"--peak {name}={PLAN.psnr_peak(name):g}" for name in config["datasets"]),
        provenance=PROVENANCE,
    shell:
        "python -m hsicomp plot-rd {input:q} --png {output.png:q} --pdf {output.pdf:q}"
        " {params.peaks} > {log:q} 2>&1"
