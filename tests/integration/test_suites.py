"""Evaluation suites on the memorised tiny model: tofu_mc (cloze), memorisation + MIA
against the holdout people, and the evaluate-suites CLI."""

from __future__ import annotations

import json

import pytest

from blur_core.cli import main
from blur_core.data import QAFormat
from blur_core.data.embedded import write_embedded_tofu
from blur_core.eval.likelihood import answer_nll
from blur_core.eval.suites import cloze_mc, parse_suite, run_suite, tofu_mc_items
from blur_core.eval.tofu import load_tofu_eval_sets
from blur_core.models import load_model, load_tokenizer


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The TOFU layout of the same 10 people x 5 QA the `target_model` fixture memorised
    (write_embedded_tofu draws them like make_qa(make_people(10))), plus holdout people."""
    out = tmp_path_factory.mktemp("suite_bench")
    write_embedded_tofu(out, n_people=10, questions_per_person=5, seed=0)
    return out


@pytest.fixture(scope="module")
def models(target_model, embedded):
    return {
        name: (load_model(str(path)), load_tokenizer(str(path)))
        for name, path in (("target", target_model), ("base", embedded["base_model"]))
    }


def test_cloze_mc_is_the_argmin_of_one_at_a_time_answer_nll(models, bench):
    model, tok = models["target"]
    items = tofu_mc_items(load_tofu_eval_sets(bench, "forget10")["retain"], "retain", seed=1)[:12]
    result = cloze_mc(model, tok, items, QAFormat(), batch_size=16, max_length=64)
    for item, row in zip(items, result["per_example"]):
        nll = [
            answer_nll(
                model, tok, [item.question], [c], QAFormat(), batch_size=1, max_length=64
            ).item()
            for c in item.choices
        ]
        assert row["loglik"] == pytest.approx([-v for v in nll], abs=1e-5)
        assert row["pred"] == min(range(4), key=lambda j: nll[j]) and row["answer"] == item.answer
    assert result["accuracy"] == sum(r["pred"] == r["answer"] for r in result["per_example"]) / 12


def test_memorisation_suite_separates_target_from_base_and_detects_members(models, bench):
    cfg = parse_suite(
        {
            "kind": "memorisation",
            "source": str(bench),
            "forget_split": "forget10",
            "batch_size": 8,
            "max_length": 64,
        }
    )
    results = {name: run_suite("memorisation", cfg, m, t) for name, (m, t) in models.items()}
    tgt, base = results["target"]["metrics"], results["base"]["metrics"]
    assert tgt["n"] == 5 and len(results["target"]["per_example"]) == 5
    # the target model was trained until it reproduces every answer
    assert tgt["forget_exact_memorisation"] > 0.9 and tgt["forget_extraction_strength"] > 0.8
    assert base["forget_exact_memorisation"] < 0.3 and base["forget_extraction_strength"] < 0.3
    # MIA: forget QA (trained on) vs holdout people (never seen). LOSS gives the memorised
    # model away completely; Min-K scores the least likely 40% of tokens, which are the
    # question's (names: unpredictable for members too), so it need not (measured: 0.32)
    for attack in ("loss", "zlib", "mink", "minkpp"):
        assert 0.0 <= base[f"mia_{attack}_auc"] <= 1.0 and 0.0 <= tgt[f"mia_{attack}_auc"] <= 1.0
    assert tgt["mia_loss_auc"] == 1.0 and tgt["mia_loss_auc"] > base["mia_loss_auc"]
    assert json.loads(json.dumps(results["target"]))["metrics"] == tgt


def test_evaluate_suites_cli_writes_one_json_per_suite_and_a_table(
    target_model, bench, tmp_path, capsys
):
    cfg = tmp_path / "suites.yaml"
    cfg.write_text(
        f"defaults: {{source: {bench}, forget_split: forget10, batch_size: 8, max_length: 64}}\n"
        "suites:\n  forget_mc: {kind: tofu_mc, set: forget}\n"
        "  world_mc: {kind: tofu_mc, set: world_facts, limit: 10}\n"
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "evaluate-suites",
                "--model",
                str(target_model),
                "--config",
                str(cfg),
                "--out-dir",
                str(out),
            ]
        )
        == 0
    )
    forget = json.loads((out / "forget_mc.json").read_text())
    assert forget["kind"] == "tofu_mc" and forget["metrics"]["n"] == 5
    assert json.loads((out / "world_mc.json").read_text())["metrics"]["n"] == 10
    assert "| forget_mc | accuracy |" in (out / "summary.md").read_text()
    assert "total wall time" in capsys.readouterr().out
    # a misspelled suite key is named, nothing is evaluated
    cfg.write_text(f"suites:\n  x: {{kind: tofu_mc, source: {bench}, sett: forget}}\n")
    assert (
        main(
            [
                "evaluate-suites",
                "--model",
                str(target_model),
                "--config",
                str(cfg),
                "--out-dir",
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )
    assert "suites.x.sett" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_real_tofu_suites_run_on_smollm2(smollm2_dir, shared_data):
    """CI-sized: the TOFU-side suites on the real TOFU copy with SmolLM2 (a few items)."""
    model, tok = load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    common = {
        "source": str(shared_data / "tofu"),
        "forget_split": "forget01",
        "batch_size": 8,
        "max_length": 128,
    }
    tofu = run_suite(
        "t", parse_suite({**common, "kind": "tofu", "limit": 2, "max_new_tokens": 8}), model, tok
    )
    assert set(tofu["tofu"]["per_example"]) == {"forget", "retain", "real_authors", "world_facts"}
    assert all(len(rows) == 2 for rows in tofu["tofu"]["per_example"].values())
    assert 0.0 <= tofu["metrics"]["model_utility"] <= 1.0
    mc = run_suite(
        "m",
        parse_suite({**common, "kind": "tofu_mc", "set": "world_facts", "limit": 4}),
        model,
        tok,
    )
    assert mc["metrics"]["n"] == 4 and all(len(r["loglik"]) == 4 for r in mc["per_example"])
    mem = run_suite("e", parse_suite({**common, "kind": "memorisation", "limit": 3}), model, tok)
    assert (
        mem["metrics"]["n"] == 3 and "mia_loss_auc" not in mem["metrics"]
    )  # no holdout01.json here
    assert 0.0 <= mem["metrics"]["forget_exact_memorisation"] <= 1.0
