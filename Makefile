# hsicomp: `make demo` builds the environment and runs the workflow on the built-in default;
# `make test` runs the test suite, `make slurm-test` the Slurm tests on a one-node cluster,
# `make config-doc` writes docs/config.md from the configuration schema.
# All create .venv on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs torch's CPU-only build (no CUDA
# packages) before the other requirements; by default pip takes torch from PyPI.
TORCH_INDEX ?=
TORCH_PIN := $(shell grep '^torch==' requirements.lock)
export DVC_NO_ANALYTICS := 1

.PHONY: env demo test slurm-test lint config-doc pull touch-pulled clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX) "$(TORCH_PIN)")
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

env: $(STAMP)

demo: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES)

test: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

# The Slurm profile on a real one-node cluster: installs the Debian packages slurm-wlm and
# munge when missing (root), starts munge, slurmctld and slurmd with a minimal configuration
# in a temporary folder (no accounting), runs tests/test_slurm.py, then stops them.
slurm-test: env
	tests/slurm/cluster.sh install
	dir=$$(mktemp -d /tmp/hsicomp-slurm.XXXXXX); \
	trap 'tests/slurm/cluster.sh stop "$$dir"; rm -rf "$$dir"' EXIT; \
	tests/slurm/cluster.sh start "$$dir" && \
	PATH="$(abspath $(BIN)):$$PATH" HSICOMP_SLURM_TEST=1 $(BIN)/python -m pytest -rs \
		tests/test_slurm.py::test_small_workflow_runs_through_slurm

lint: env
	$(BIN)/ruff check src tests benchmarks workflow/scripts
	$(BIN)/snakefmt --check Snakefile rules
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

# docs/config.md, the reference of the configuration's keys, from the schema
# (tests/test_config_doc.py fails while it is out of date).
config-doc: env
	$(BIN)/python workflow/scripts/config_doc.py --out docs/config.md

# Fetch the DVC-tracked files, then mark them up to date for Snakemake (pulled files get
# arbitrary modification times): the released LineRWKV checkpoints from the authors'
# repository (network access), the data and models from the project's remote when one is
# configured. CONFIG=config/hyspecnet.yaml pulls for that configuration instead of the
# built-in default. Fails, touching nothing, when a file the configuration's `data` and
# `models` targets need is still missing (it must then be built: `snakemake ... models`).
SNAKE_ARGS = $(if $(WORKDIR),-d $(WORKDIR)) $(if $(CONFIG),--configfile $(CONFIG))

pull: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc pull checkpoints/linerwkv-release/*.pth.dvc
	if [ -n "$$($(BIN)/dvc remote list)" ]; then PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc pull; fi
	$(MAKE) --no-print-directory touch-pulled

touch-pulled: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --summary data models $(SNAKE_ARGS) \
		2>/dev/null | awk -F'\t' 'NR > 1 && $$5 == "missing" { print "missing: " $$1; n++ } \
		END { if (n) { print n " file(s) the configuration needs are not there" > "/dev/stderr"; exit 1 } }'
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 1 --touch data models $(SNAKE_ARGS)

clean:
	rm -rf results logs .snakemake
