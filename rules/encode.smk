# Encode stage: one job per (dataset, codec, model, delta, shard of test patches) writes one
# .hsic file per patch. {codec} is the label of a config `codecs:` entry; {model} is "-" for
# codecs without a model and the LineRWKV size for linerwkv entries.

BITSTREAMS = "results/bitstreams/{dataset}/{codec}/{model}/d{delta}/shard{shard}"
TIMINGS = "results/bitstreams/{dataset}/{codec}/{model}/d{delta}/shard{shard}.timings.csv"


rule encode_shard:
    input:
        manifest="data/{dataset}/manifest.csv",
        test="data/{dataset}/test",
        model=model_input,
    output:
        bitstreams=directory(BITSTREAMS),
        timings=TIMINGS,
    log:
        "logs/encode/{dataset}/{codec}/{model}/d{delta}/shard{shard}.log",
    benchmark:
        "logs/benchmarks/encode/{dataset}/{codec}/{model}/d{delta}/shard{shard}.tsv"
    # on a cluster, the encode and verify jobs of one shard run in one job
    group:
        "shard"
    conda:
        ENV
    threads: lambda w: codec_threads(w.codec)
    resources:
        mem_mb=4000,
        runtime=lambda w: codec_runtime(w.codec),
    params:
        shards=SHARDS,
        codec=lambda w: codec_name(w.codec),
        codec_params=codec_params,
    shell:
        "python -m hsicomp encode-shard --manifest {input.manifest:q} --shard {wildcards.shard}"
        " --shards {params.shards} --codec {params.codec} --label {wildcards.codec}"
        " --params {params.codec_params}"
        " --delta {wildcards.delta} --out-dir {output.bitstreams:q} --timings {output.timings:q}"
        " --threads {threads} > {log:q} 2>&1"
