# Evaluation stage: decode every bitstream and compare with the original, then aggregate
# per-patch metrics into rd_all.csv and draw the rate-distortion figure.


rule verify_shard:
    input:
        manifest="data/{dataset}/manifest.csv",
        test="data/{dataset}/test",
        bitstreams=BITSTREAMS,
        timings=TIMINGS,
        model=model_input,
    output:
        "results/metrics/{dataset}/{codec}/{model}/d{delta}/shard{shard}.csv",
    params:
        shards=SHARDS,
        codec=lambda w: codec_name(w.codec),
        codec_params=codec_params,
        peak=lambda w: psnr_peak(w.dataset),
    threads: lambda w: codec_threads(w.codec)
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/verify/{dataset}/{codec}/{model}/d{delta}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/verify/{dataset}/{codec}/{model}/d{delta}/shard{shard}.tsv"
    conda:
        ENV
    shell:
        "python -m hsicomp verify-shard --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shards {params.shards} --bitstreams {input.bitstreams:q} --timings {input.timings:q}"
        " --dataset {wildcards.dataset} --codec {params.codec} --label {wildcards.codec}"
        " --model {wildcards.model}"
        " --delta {wildcards.delta} --params {params.codec_params} --peak {params.peak}"
        " --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        metric_files(),
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
    shell:
        "python -m hsicomp aggregate {input:q} --rd {output.rd:q} --per-patch {output.per_patch:q}"
        " > {log:q} 2>&1"


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
    shell:
        "python -m hsicomp plot-rd {input:q} --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"
