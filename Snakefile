# hsicomp workflow: data -> encode -> decode and verify -> rd_all.csv and figures.
#
#   snakemake --cores 8 results/rd_all.csv                                  # built-in default
#   snakemake results/rd_all.csv --configfile config/hyspecnet.yaml         # full paper grid
#
# Without --configfile the built-in default config/config.yaml is used; with one, only the
# given files (and --config overrides) apply.

from snakemake.utils import min_version

min_version("9.0")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/encode.smk"
include: "rules/evaluate.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
        rules.plot_rd.output,
        rules.bdrate.output,
        rules.plot_rate_error.output,
        rules.plot_lossless.output,
        rules.band_rates.output,
        rules.plot_band_rates.output,
        rules.error_image.output,
        rules.spectral_signature.output if FIGURES.signature_labels else [],
        rules.compare_references.output if config.get("references") else [],
        PLAN.model_files(),
