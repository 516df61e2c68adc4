# hsicomp: `make demo` builds the environment and runs the workflow on the built-in default;
# `make test` runs the test suite, `make slurm-test` the Slurm tests on a one-node cluster.
# All create .venv on first use.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
export DVC_NO_ANALYTICS := 1

.PHONY: env demo test slurm-test lint pull clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

env: $(STAMP)

demo: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores $(CORES) results/rd_all.csv

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
	$(BIN)/ruff check src tests benchmarks
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint

# Fetch the DVC-tracked files, then mark them up to date for Snakemake (pulled files get
# arbitrary modification times): the released LineRWKV checkpoints from the authors'
# repository (network access), the data and models from the project's remote when one is
# configured. CONFIG=config/hyspecnet.yaml touches that configuration's models.
pull: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc pull checkpoints/linerwkv-release/*.pth.dvc
	if [ -n "$$($(BIN)/dvc remote list)" ]; then PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc pull; fi
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --cores 1 --touch data models \
		$(if $(CONFIG),--configfile $(CONFIG))

clean:
	rm -rf results logs .snakemake
