"""train.peft (LoRA): the validated config, how target_modules entries match module names,
the bad-target errors, parameter counts and the adapters-disabled reference view (on a
2-layer Llama built in memory, no training), and how LoRA runs show in the report."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from blur_core.config import ConfigError
from blur_core.train.adapters import (
    BaseView,
    add_adapters,
    parameter_counts,
    target_modules_value,
)
from blur_core.train.config import AdapterConfig, parse_run_config

pytest.importorskip("peft")


def _cfg(tmp_path, **train) -> dict:
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    return {
        "model": "m",
        "output_dir": str(tmp_path / "o"),
        "data": {"forget": str(data), "retain": str(data)},
        "train": {"max_steps": 1, **train},
    }


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(config).eval()


# ----------------------------------------------------------------------------- config
def test_peft_absent_or_null_is_full_training_and_empty_is_lora_defaults(tmp_path):
    assert parse_run_config(_cfg(tmp_path)).train.peft is None
    assert parse_run_config(_cfg(tmp_path, peft=None)).train.peft is None
    cfg = parse_run_config(_cfg(tmp_path, peft={}))
    assert cfg.train.peft == AdapterConfig()
    assert (cfg.train.peft.rank, cfg.train.peft.alpha, cfg.train.peft.dropout) == (8, 16.0, 0.0)
    assert cfg.train.peft.target_modules == ["all-linear"]
    assert cfg.resolved()["train"]["peft"]["rank"] == 8  # written beside the outputs


@pytest.mark.parametrize(
    "peft, match",
    [
        ({"rnk": 4}, r"unknown key train\.peft\.rnk"),
        ({"rank": 0}, r"train\.peft\.rank = 0"),
        ({"dropout": 1.0}, r"train\.peft\.dropout = 1\.0: must be in \[0, 1\)"),
        ({"method": "ia3"}, r"train\.peft\.method = 'ia3'"),
        ({"target_modules": []}, r"train\.peft\.target_modules is empty"),
        ({"target_modules": ["all-linear", "q_proj"]}, "stands alone"),
        ({"target_modules": ["q_proj", "layers.(0"]}, r"target_modules\[1\] .*not a valid regex"),
        ({"modules_to_save": ["lm_.*"]}, r"modules_to_save\[0\] = 'lm_\.\*'"),
    ],
)
def test_bad_peft_settings_name_the_key(tmp_path, peft, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config(_cfg(tmp_path, peft=peft))


def test_peft_and_trainable_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.trainable .* and train\.peft are both set"):
        parse_run_config(_cfg(tmp_path, peft={}, trainable=["lm_head"]))


def test_target_entries_match_as_peft_will_match_them():
    """A plain name is a dotted suffix; anything else a regex over the whole module name.
    peft full-matches the one string we hand it."""
    rx = re.compile(
        target_modules_value(["q_proj", "mlp.down_proj", r"model\.layers\.1\..*o_proj"])
    )
    hits = [
        "model.layers.0.self_attn.q_proj",
        "q_proj",
        "model.layers.3.mlp.down_proj",
        "model.layers.1.self_attn.o_proj",
    ]
    misses = [
        "model.layers.0.self_attn.q_proj_x",
        "model.layers.0.self_attn.xq_proj",
        "model.layers.3.mlpdown_proj",  # the '.' of a plain name is literal
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.self_attn",
    ]
    assert all(rx.fullmatch(n) for n in hits)
    assert not any(rx.fullmatch(n) for n in misses)
    assert target_modules_value(["all-linear"]) == "all-linear"


# ----------------------------------------------------------------------------- model
def test_adapters_freeze_the_base_and_count_parameters():
    base = _tiny_llama()
    n_base = sum(p.numel() for p in base.parameters())
    model = add_adapters(base, AdapterConfig(rank=2, target_modules=["q_proj", "v_proj"]), seed=0)
    trainable, total = parameter_counts(model)
    # 2 layers x 2 modules x (A: 2 x 16 + B: 16 x 2)
    assert trainable == 2 * 2 * (2 * 16 + 16 * 2)
    assert total == n_base + trainable
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    # the initialisation depends on the seed only, not on the caller's RNG state
    torch.manual_seed(123)
    again = add_adapters(
        _tiny_llama(), AdapterConfig(rank=2, target_modules=["q_proj", "v_proj"]), 0
    )
    a = dict(model.named_parameters())
    assert all(torch.equal(a[n], p) for n, p in again.named_parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "peft, match",
    [
        ({"target_modules": ["q_proj", "qkv"]}, r"target_modules\[1\] = 'qkv' matches no module"),
        ({"target_modules": [r"layers\.9\..*"]}, r"target_modules\[0\] .* matches no module"),
        ({"modules_to_save": ["head"]}, r"modules_to_save\[0\] = 'head' matches no module"),
    ],
)
def test_targets_that_match_nothing_are_named(peft, match):
    with pytest.raises(ConfigError, match=match) as err:
        add_adapters(_tiny_llama(), AdapterConfig(**peft), seed=0)
    assert "model.layers." in str(err.value)  # shows what module names look like


def test_base_view_is_the_base_model_and_keeps_the_training_mode():
    base = _tiny_llama()
    x = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        expected = base(input_ids=x).logits
    model = add_adapters(base, AdapterConfig(rank=2, target_modules=["q_proj", "v_proj"]), 0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()  # a trained adapter
        model.train()
        view = BaseView(model, model)
        assert not view.training
        ref = view(input_ids=x).logits
        adapted = model(input_ids=x).logits
    assert model.training  # restored after the reference forward
    assert torch.equal(ref, expected)
    assert float((adapted - expected).abs().max()) > 1e-3


# ----------------------------------------------------------------------------- pipeline, report
def test_report_shows_adapter_and_trainable_parameters(tmp_path):
    from blur_core.report import write_report

    aggs = {
        s: {"probability": 0.5, "rouge": 0.4, "truth_ratio": 0.6}
        for s in ("forget", "retain", "real_authors", "world_facts")
    }
    files = []
    for entry, summary in (
        ("full", {"steps": 3, "adapter": None, "trainable_parameters": 1000}),
        (
            "lora",
            {
                "steps": 3,
                "adapter": {"method": "lora", "rank": 8, "alpha": 16.0},
                "trainable_parameters": 40,
            },
        ),
    ):
        unit = tmp_path / "results" / "emb" / "tiny" / "runs" / entry / "seed=0"
        unit.mkdir(parents=True)
        result = {"aggregates": aggs, "model_utility": 0.5, "forget_quality": 0.1}
        (unit / "eval.json").write_text(json.dumps(result))
        (unit / "summary.json").write_text(json.dumps(summary))
        (unit / "run_config.yaml").write_text(yaml.safe_dump({"method": {"name": "blur"}}))
        files.append(unit / "eval.json")
    rows = write_report(files, tmp_path / "report")
    assert [(r["adapter"], r["trainable_params"]) for r in rows] == [
        ("full", 1000),
        ("lora r=8 a=16", 40),
    ]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| adapter | trainable_params |" in md and "| lora r=8 a=16 | 40 |" in md
