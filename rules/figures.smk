# Results stage: the BD-rate table and the figures drawn from rd_all.csv, and the per-band
# rates and error image of one test patch (the first test patch of the first dataset unless
# the config's figures: section names others). The one-patch figures read what the encode
# and verify jobs wrote (band-bits CSVs, verified bitstreams): nothing is encoded again.
# What they show: hsicomp.evaluation.plan.Figures.

FIGURE_MANIFEST = f"data/{FIGURES.dataset}/manifest.csv"
FIGURE_TEST = f"data/{FIGURES.dataset}/test"
FIGURE_PATCH = f"--patch {shlex.quote(FIGURES.patch)}" if FIGURES.patch else ""
IMAGE_LABEL = FIGURES.image_label


rule bdrate:
    input:
        "results/rd_all.csv",
    output:
        report(
            "results/bdrate.csv",
            caption="../workflow/report/bdrate.rst",
            category="Results",
        ),
    log:
        "logs/figures/bdrate.log",
    conda:
        ENV
    params:
        references=" ".join(f"--reference {shlex.quote(r)}" for r in FIGURES.references),
    shell:
        "python -m hsicomp bdrate {input:q} {params.references} --metric psnr --metric sam"
        " --out {output:q} > {log:q} 2>&1"


rule compare_references:
    """The rates of rd_all.csv next to the reference rates of the config's `references`."""
    input:
        "results/rd_all.csv",
    output:
        report(
            "results/reference_comparison.csv",
            caption="../workflow/report/reference_comparison.rst",
            category="Results",
        ),
    log:
        "logs/figures/compare_references.log",
    conda:
        ENV
    params:
        references=lambda w: quoted_json(config.get("references", {})),
    shell:
        "python -m hsicomp compare-rates {input:q} --references {params.references}"
        " --out {output:q} > {log:q} 2>&1"


rule plot_rate_error:
    input:
        "results/rd_all.csv",
    output:
        png=report(
            "results/figures/rate_max_error.png",
            caption="../workflow/report/rate_max_error.rst",
            category="Figures",
        ),
        pdf="results/figures/rate_max_error.pdf",
    log:
        "logs/figures/rate_max_error.log",
    conda:
        ENV
    shell:
        "python -m hsicomp plot-rate-error {input:q} --png {output.png:q} --pdf {output.pdf:q}"
        " > {log:q} 2>&1"


rule plot_lossless:
    input:
        "results/rd_all.csv",
    output:
        png=report(
            "results/figures/lossless_rates.png",
            caption="../workflow/report/lossless_rates.rst",
            category="Figures",
        ),
        pdf="results/figures/lossless_rates.pdf",
    log:
        "logs/figures/lossless_rates.log",
    conda:
        ENV
    shell:
        "python -m hsicomp plot-lossless {input:q} --png {output.png:q} --pdf {output.pdf:q}"
        " > {log:q} 2>&1"


rule band_rates:
    input:
        manifest=FIGURE_MANIFEST,
        test=FIGURE_TEST,
        band_bits=[
            path
            for label in FIGURES.band_labels
            for path in FIGURES.shard_files(label, FIGURES.band_delta, "band_bits")
        ],
    output:
        report(
            "results/band_rates.csv",
            caption="../workflow/report/band_rates_table.rst",
            category="Results",
        ),
    log:
        "logs/figures/band_rates.log",
    conda:
        ENV
    params:
        sources=quoted_json(
            {
                label: {
                    "model": FIGURES.model(label),
                    "files": FIGURES.shard_files(label, FIGURES.band_delta, "band_bits"),
                }
                for label in FIGURES.band_labels
            }
        ),
        delta=FIGURES.band_delta,
        patch=FIGURE_PATCH,
    shell:
        "python -m hsicomp band-rates --manifest {input.manifest:q} {params.patch}"
        " --sources {params.sources} --delta {params.delta} --out {output:q} > {log:q} 2>&1"


rule plot_band_rates:
    input:
        "results/band_rates.csv",
    output:
        png=report(
            "results/figures/band_rates.png",
            caption="../workflow/report/band_rates.rst",
            category="Figures",
        ),
        pdf="results/figures/band_rates.pdf",
    log:
        "logs/figures/plot_band_rates.log",
    conda:
        ENV
    shell:
        "python -m hsicomp plot-band-rates {input:q} --png {output.png:q} --pdf {output.pdf:q}"
        " > {log:q} 2>&1"


rule error_image:
    input:
        manifest=FIGURE_MANIFEST,
        test=FIGURE_TEST,
        # verified shards: their bitstreams are the files decoded here
        metrics=FIGURES.shard_files(IMAGE_LABEL, FIGURES.image_delta, "metrics"),
        bitstreams=FIGURES.shard_files(IMAGE_LABEL, FIGURES.image_delta, "bitstreams"),
        models=FIGURES.model_files(IMAGE_LABEL),
    output:
        png=report(
            "results/figures/error_image.png",
            caption="../workflow/report/error_image.rst",
            category="Figures",
        ),
        pdf="results/figures/error_image.pdf",
    log:
        "logs/figures/error_image.log",
    benchmark:
        "logs/benchmarks/figures/error_image.tsv"
    conda:
        ENV
    threads: PLAN.threads(IMAGE_LABEL)
    resources:
        mem_mb=4000,
    params:
        label=IMAGE_LABEL,
        codec=PLAN.codec_name(IMAGE_LABEL),
        codec_params=quoted_json(FIGURES.params(IMAGE_LABEL)),
        delta=FIGURES.image_delta,
        band=f"--band {FIGURES.band}" if FIGURES.band is not None else "",
        patch=FIGURE_PATCH,
        peak=PLAN.psnr_peak(FIGURES.dataset),
    shell:
        "python -m hsicomp error-image --manifest {input.manifest:q} {params.patch}"
        " --bitstreams {input.bitstreams:q} --codec {params.codec} --label {params.label}"
        " --params {params.codec_params} --delta {params.delta} {params.band}"
        " --peak {params.peak} --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"


rule spectral_signature:
    """One pixel's spectrum and each lossy codec's reconstruction of it, at the codec's
    evaluated point nearest figures.spectral_signature.rate (chosen from rd_all.csv)."""
    input:
        rd="results/rd_all.csv",
        manifest=FIGURE_MANIFEST,
        test=FIGURE_TEST,
        bitstreams=FIGURES.signature_inputs()[0],
        models=FIGURES.signature_inputs()[1],
    output:
        png=report(
            "results/figures/spectral_signature.png",
            caption="../workflow/report/spectral_signature.rst",
            category="Figures",
        ),
        pdf="results/figures/spectral_signature.pdf",
    log:
        "logs/figures/spectral_signature.log",
    conda:
        ENV
    params:
        sources=quoted_json(FIGURES.signature_sources()),
        rate=FIGURES.signature_rate,
        pixel=(
            f"--pixel {FIGURES.signature_pixel[0]},{FIGURES.signature_pixel[1]}"
            if FIGURES.signature_pixel
            else ""
        ),
        patch=FIGURE_PATCH,
        dataset=FIGURES.dataset,
        peak=PLAN.psnr_peak(FIGURES.dataset),
    shell:
        "python -m hsicomp spectral-signature {input.rd:q} --manifest {input.manifest:q}"
        " --dataset {params.dataset} {params.patch} {params.pixel} --rate {params.rate}"
        " --sources {params.sources} --peak {params.peak}"
        " --png {output.png:q} --pdf {output.pdf:q} > {log:q} 2>&1"


rule figures:
    """Every figure and table of the results."""
    input:
        rules.bdrate.output,
        rules.plot_rd.output,
        rules.plot_rate_error.output,
        rules.plot_lossless.output,
        rules.band_rates.output,
        rules.plot_band_rates.output,
        rules.error_image.output,
        rules.spectral_signature.output if FIGURES.signature_labels else [],
