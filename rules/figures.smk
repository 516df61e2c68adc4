# Results stage: the BD-rate table and the figures drawn from rd_all.csv, and the per-band
# rates and error image of one test patch (the first test patch of the first dataset unless
# the config's figures: section names others).

from types import SimpleNamespace

FIGURES = config["figures"]
FIGURE_DATASET = FIGURES["dataset"] or next(iter(config["datasets"]))
FIGURE_MANIFEST = f"data/{FIGURE_DATASET}/manifest.csv"
FIGURE_TEST = f"data/{FIGURE_DATASET}/test"
FIGURE_PATCH = f"--patch {shlex.quote(FIGURES['patch'])}" if FIGURES["patch"] else ""

# Codec labels of the per-band rates (default: every label evaluated at the figure's delta,
# except lossy transform codecs, which have no per-band bits) and of the error image
# (default: the BD-rate reference, else the first label, that is evaluated at some delta > 0).
BAND_RATE_LABELS = FIGURES["band_rates"]["codecs"] or [
    label
    for label in config["codecs"]
    if FIGURES["band_rates"]["delta"] in codec_deltas(label)
    and codec_name(label) not in LEARNED_CODECS
]
ERROR_IMAGE_LABEL = FIGURES["error_image"]["codec"] or next(
    (
        label
        for label in [FIGURES["reference"], *config["codecs"]]
        if label in config["codecs"] and max(codec_deltas(label)) > 0
    ),
    next(iter(config["codecs"])),
)

if FIGURE_DATASET not in config["datasets"]:
    raise ValueError(f"figures.dataset {FIGURE_DATASET!r} is not a dataset")
_unknown = [c for c in [*BAND_RATE_LABELS, ERROR_IMAGE_LABEL] if c not in config["codecs"]]
if _unknown:
    raise ValueError(
        f"figures: {', '.join(_unknown)} is not a codec label"
        f" (labels: {', '.join(config['codecs'])})"
    )

# {model} of each label in the one-patch figures: the smallest linerwkv size, the first gdn
# lambda, or "-".
_SIZE_ORDER = ["-", "XS", "S", "M", "L"]
FIGURE_MODEL = {
    label: min(
        codec_models(label),
        key=lambda m: _SIZE_ORDER.index(m) if m in _SIZE_ORDER else len(_SIZE_ORDER),
    )
    for label in config["codecs"]
}
# Each label's entry as `band-rates --codecs` takes it; model codecs get the model file of
# FIGURE_MODEL and the entry's threads, as in the encode jobs.
FIGURE_ENTRIES = {
    label: {
        "codec": codec_name(label),
        "model": FIGURE_MODEL[label],
        "params": job_params(label, FIGURE_MODEL[label], FIGURE_DATASET, codec_threads(label)),
    }
    for label in config["codecs"]
}
# The model files the one-patch figures of each label need.
FIGURE_MODEL_FILES = {
    label: model_input(
        SimpleNamespace(codec=label, model=FIGURE_MODEL[label], dataset=FIGURE_DATASET)
    )
    for label in config["codecs"]
}


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
        reference=FIGURES["reference"],
    shell:
        "python -m hsicomp bdrate {input:q} --reference {params.reference:q} --out {output:q}"
        " > {log:q} 2>&1"


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
        models=[path for label in BAND_RATE_LABELS for path in FIGURE_MODEL_FILES[label]],
    output:
        report(
            "results/band_rates.csv",
            caption="../workflow/report/band_rates_table.rst",
            category="Results",
        ),
    log:
        "logs/figures/band_rates.log",
    benchmark:
        "logs/benchmarks/figures/band_rates.tsv"
    conda:
        ENV
    threads: max([codec_threads(label) for label in BAND_RATE_LABELS], default=1)
    resources:
        mem_mb=4000,
    params:
        codecs=quoted_json({label: FIGURE_ENTRIES[label] for label in BAND_RATE_LABELS}),
        delta=FIGURES["band_rates"]["delta"],
        patch=FIGURE_PATCH,
    shell:
        "python -m hsicomp band-rates --manifest {input.manifest:q} {params.patch}"
        " --codecs {params.codecs} --delta {params.delta} --out {output:q} > {log:q} 2>&1"


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
        models=FIGURE_MODEL_FILES[ERROR_IMAGE_LABEL],
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
    threads: codec_threads(ERROR_IMAGE_LABEL)
    resources:
        mem_mb=4000,
    params:
        label=ERROR_IMAGE_LABEL,
        codec=codec_name(ERROR_IMAGE_LABEL),
        codec_params=quoted_json(FIGURE_ENTRIES[ERROR_IMAGE_LABEL]["params"]),
        # a lossy codec has the single point delta 0 (no bound)
        delta=(
            0
            if codec_name(ERROR_IMAGE_LABEL) in LEARNED_CODECS
            else FIGURES["error_image"]["delta"]
        ),
        band=(
            f"--band {FIGURES['error_image']['band']}"
            if FIGURES["error_image"]["band"] is not None
            else ""
        ),
        patch=FIGURE_PATCH,
        peak=psnr_peak(FIGURE_DATASET),
    shell:
        "python -m hsicomp error-image --manifest {input.manifest:q} {params.patch}"
        " --codec {params.codec} --label {params.label} --params {params.codec_params}"
        " --delta {params.delta} {params.band} --peak {params.peak}"
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
