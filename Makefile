# The two commands of the README. Each creates or reuses the project's virtual environment (.venv).
#   make main   — the main job: the Snakemake DAG on the embedded default data (MNIST-5k, no download)
#   make test   — the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: main test test-fast bench
main: $(VENV)/.installed
	$(BIN)/snakemake --profile local all_tables

# Two workers: the workflow tests mostly wait (Snakemake, Slurm and DVC subprocesses, the Slurm plugin's
# status polling) while the others compute, so two halve the wall time on a 2-core machine.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup --durations=15

# The unit tests alone (no Snakemake, Slurm or DVC subprocess, nothing marked slow): the inner loop.
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not workflow and not slow" -q

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/trainer_throughput.py

# The exact versions of constraints.txt (torch==2.14.1 / torchvision==0.29.1 among them; pyproject.toml holds the
# ranges). pip installs uv (pinned there too), uv the rest: the same wheels from the same index, downloaded and
# unpacked in parallel (measured: ~1.5 min with byte-code for the ~6 GB of torch's CUDA stack where pip took
# 7 min 49 s). Byte-code is compiled at install, as pip does: uv leaves it to the first import, which cannot
# write it where PYTHONDONTWRITEBYTECODE is set, and every process then compiled torch anew (the test suite took
# 24 min instead of 18). uv does not read pip.conf: a private index goes in UV_DEFAULT_INDEX. The marker file
# makes a second `make` skip the install until either file changes.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -c constraints.txt -e '.[test]'
	touch $@
