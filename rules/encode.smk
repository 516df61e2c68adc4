# Encode stage: one job per (dataset, codec, model, delta, shard of test patches) writes one
# .hsic file per patch, the patches' encode times and the bits the codec spent on each band.
# {codec} is the label of a config `codecs:` entry; {model} is "-" for codecs without a
# model, the LineRWKV size or the tag of a rate point (paths: hsicomp.evaluation.plan).


rule encode_shard:
    input:
        manifest="data/{dataset}/manifest.csv",
        test="data/{dataset}/test",
        model=model_input,
    output:
        bitstreams=directory(BITSTREAMS),
        timings=TIMINGS,
        band_bits=BAND_BITS,
    log:
        "logs/encode/{dataset}/{codec}/{model}/d{delta}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/encode/{dataset}/{codec}/{model}/d{delta}/shard{shard}.tsv"
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
    shell:
        "python -m hsicomp encode-shard --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shards {params.shards} --codec {params.codec} --label {wildcards.codec}"
        " --params {params.codec_params}"
        " --delta {wildcards.delta} --out-dir {output.bitstreams:q} --timings {output.timings:q}"
        " --band-bits {output.band_bits:q} --threads {threads} > {log:q} 2>&1"
