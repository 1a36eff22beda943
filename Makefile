# make test : create .venv, install blur_core with its pinned deps, run the test suite
# make demo : build the embedded benchmark + tiny model, fine-tune it, unlearn with BLUR-NPO, score
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO   ?= results/demo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so the CPU build on local disk is used (no CUDA download)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q -ra

test-fast: venv
	$(PY) -m pytest -q -ra -m "not slow"

demo: venv
	$(PY) -m blur_core make-embedded --out $(DEMO)/embedded
	$(PY) -m blur_core unlearn --config examples/finetune.yaml
	$(PY) -m blur_core unlearn --config examples/blur_npo.yaml
	$(PY) -m blur_core unlearn --config examples/graddiff.yaml
	$(PY) -m blur_core score --model $(DEMO)/target/model --model $(DEMO)/blur_npo/model \
	    --model $(DEMO)/graddiff/model \
	    --data forget=$(DEMO)/embedded/data/forget.jsonl --data retain=$(DEMO)/embedded/data/retain.jsonl \
	    --json $(DEMO)/scores.json

clean:
	rm -rf $(DEMO)
