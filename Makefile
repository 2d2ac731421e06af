# One command to set up and run the pipeline (`make report`), one to set up and test (`make test`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stages call `python -m analysis ...`; put the project's environment first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: setup report test test-fast lint bench clean

# The package with its pipeline and dev extras, every version pinned by constraints.txt; editable,
# so `python -m analysis` and `import analysis.strategies` work from any folder.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt setuptools
	$(BIN)/pip install --quiet --disable-pip-version-check --no-build-isolation -c constraints.txt -e ".[pipeline,dev]"
	# librosa compiles its numba kernels when first imported (about 11 s of CPU on one core) and
	# caches them inside the environment: once here, not in the first stage of the first report.
	$(BIN)/python -c "import librosa.util.utils"
	touch $(STAMP)

setup: $(STAMP)

report: setup
	$(RUN) $(BIN)/dvc repro
	@echo "Report: report/_output/report.html (to read), report/_output/report.pdf (to share)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(RUN) $(BIN)/python -m pytest

test-fast: setup
	$(RUN) $(BIN)/python -m pytest -m "not slow"

bench: setup
	$(RUN) $(BIN)/python benchmarks/run_all.py

clean:
	rm -rf build report/_output report/figures report/report.qmd report/report.typ data/synthetic .tmp data/.*.tmp
