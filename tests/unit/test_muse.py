"""MUSE-News loader and metric pieces against hand values; evaluate_muse on a tiny Llama."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from blur_core.data.muse import MuseData, load_muse, validate_muse_records
from blur_core.data.tofu import BenchmarkUnavailableError
from blur_core.eval.muse import (
    MUSE_NEWS_AUC_RETRAIN,
    add_privleak_reference,
    cut_answer,
    evaluate_muse,
    generate_raw,
    knowmem_prompt,
    privleak_value,
    recompute_aggregates,
    rouge_l,
    truncate_to_tokens,
)

WORDS = "the cat sat on mat dog ran to park bird flew over house rain fell Question Answer what who where"


@pytest.fixture(scope="module")
def tiny():
    from blur_core.tiny import build_tiny_llama, build_tokenizer

    tok = build_tokenizer([WORDS, "Question: Answer: \n"])
    model = build_tiny_llama(
        tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=1
    )
    return model, tok


# ---------------------------------------------------------------------------
# prompt, cut rule, ROUGE, PrivLeak formula
# ---------------------------------------------------------------------------


def test_knowmem_prompt_literal():
    p = knowmem_prompt("Who won?", ["Q1?", "Q2?"], ["A1", "A2"])
    assert (
        p
        == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Who won?\nAnswer: "
    )
    assert knowmem_prompt("Who?", [], []) == "Question: Who?\nAnswer: "
    with pytest.raises(ValueError, match="ICL"):
        knowmem_prompt("Who?", ["a"], [])


def test_cut_answer_applies_each_stop_word_in_order():
    assert cut_answer("1472\n\nQuestion: next") == "1472"
    assert cut_answer("1472\nQuestion: next") == "1472"
    assert cut_answer("1472 Question: next") == "1472 "
    assert cut_answer("a\nb") == "a\nb"
    assert cut_answer("") == ""


def test_rouge_l_f1_and_recall_hand_example():
    (s,) = rouge_l(["the cat sat on the mat"], ["the cat on mat"])
    # LCS = "the cat on mat" = 4; P = 4/4, R = 4/6, F = 2*1*(2/3)/(1+2/3) = 0.8
    assert s["f1"] == pytest.approx(0.8) and s["recall"] == pytest.approx(4 / 6)
    (s,) = rouge_l(["1472"], [""])
    assert s["f1"] == 0.0
    with pytest.raises(ValueError, match="references"):
        rouge_l(["a"], [])


def test_privleak_formula_and_reference():
    assert pytest.approx(0.4772) == MUSE_NEWS_AUC_RETRAIN
    assert privleak_value(0.3, 0.4772) == pytest.approx((0.3 - 0.4772) / 0.4772 * 100)
    with pytest.raises(ValueError, match="auc_ref"):
        privleak_value(0.3, 0.0)
    res = {"metrics": {"privleak": None}, "privleak_auc": 0.3}
    add_privleak_reference(res)
    assert res["privleak"] == pytest.approx((0.3 - 0.4772) / 0.4772 * 100)
    assert res["metrics"]["privleak"] == res["privleak"]
    assert res["privleak_reference"] == "muse_news_constant" and res[
        "privleak_auc_ref"
    ] == pytest.approx(0.4772)
    add_privleak_reference(res, {"privleak_auc": 0.5})
    assert res["privleak"] == pytest.approx(-40.0)
    assert res["privleak_reference"] == "retain_model" and res["privleak_auc_ref"] == 0.5
    with pytest.raises(ValueError, match="privleak_auc"):
        add_privleak_reference({"metrics": {}})
    with pytest.raises(ValueError, match="retain_result"):
        add_privleak_reference(res, {"metrics": {}})


def test_recompute_aggregates_from_rows():
    per = {
        "knowmem_f": [{"rougeL_f1": 0.5}, {"rougeL_f1": 1.0}],
        "privleak": {
            "forget": [{"min_k_score": 1.0}, {"min_k_score": 2.0}],
            "holdout": [{"min_k_score": 3.0}, {"min_k_score": 0.5}],
        },
    }
    agg = recompute_aggregates(per)
    assert agg["knowmem_f"] == pytest.approx(75.0)
    # MUSE AUC = P(holdout more likely = lower score than forget): pairs (h,f): (3,1) no, (3,2) no,
    # (0.5,1) yes, (0.5,2) yes -> 0.5
    assert agg["privleak_auc"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------
# loader
# ---------------------------------------------------------------------------


def _write_muse(root: Path, **override) -> Path:
    files = {
        "knowmem/forget_qa.json": [{"question": "q1", "answer": "a1"}],
        "knowmem/forget_qa_icl.json": [{"question": "iq", "answer": "ia"}],
        "knowmem/retain2_qa.json": [{"question": "q2", "answer": "a2"}],
        "knowmem/retain2_qa_icl.json": [{"question": "iq2", "answer": "ia2"}],
        "verbmem/forget.json": [{"prompt": "p", "gt": "g"}],
        "privleak/forget.json": ["forget text"],
        "privleak/retain2.json": ["retain text"],
        "privleak/holdout.json": ["holdout text"],
    }
    files.update(override)
    for name, records in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(records))
    (root / "raw").mkdir(exist_ok=True)
    (root / "raw" / "forget.txt").write_text("raw forget")
    return root


def test_load_muse_local(tmp_path):
    data = load_muse(_write_muse(tmp_path))
    assert isinstance(data, MuseData)
    assert data.counts() == {k: 1 for k in data.counts()}
    assert data.knowmem_retain[0]["answer"] == "a2"
    assert data.raw_forget == tmp_path / "raw" / "forget.txt" and data.raw_retain is None


@pytest.mark.parametrize(
    "name, records, pattern",
    [
        (
            "knowmem/forget_qa.json",
            [{"question": "q", "answer": "a"}, {"question": "q"}],
            r"forget_qa\.json: record 1 has no field 'answer'",
        ),
        (
            "verbmem/forget.json",
            [{"prompt": "p", "gt": 3}],
            r"verbmem/forget\.json: record 0 field 'gt' must be a string",
        ),
        ("privleak/holdout.json", ["ok", 5], r"holdout\.json: record 1 must be a string"),
        ("privleak/forget.json", [], r"privleak/forget\.json: no records"),
        ("knowmem/retain2_qa_icl.json", {"a": 1}, r"retain2_qa_icl\.json: expected a JSON list"),
    ],
)
def test_load_muse_schema_errors_name_file_index_field(tmp_path, name, records, pattern):
    _write_muse(tmp_path, **{name: records})
    with pytest.raises(ValueError, match=pattern):
        load_muse(tmp_path)


def test_load_muse_missing_file_and_offline_hub(tmp_path, monkeypatch):
    root = _write_muse(tmp_path)
    (root / "verbmem" / "forget.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"verbmem/forget\.json"):
        load_muse(root)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_muse(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown MUSE record kind"):
        validate_muse_records([], "bogus", "x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchmarkUnavailableError, match="muse-bench/MUSE-News-does-not-exist"):
        load_muse("muse-bench/MUSE-News-does-not-exist")


# ---------------------------------------------------------------------------
# generation and evaluate_muse on a tiny model
# ---------------------------------------------------------------------------


def test_generate_raw_batched_equals_single(tiny):
    model, tok = tiny
    prompts = [
        "the cat sat on",
        "a dog",
        "where the bird flew over the house rain",
        "Question: what\nAnswer: ",
    ]
    batched = generate_raw(model, tok, prompts, max_new_tokens=6, batch_size=4)
    single = [generate_raw(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_raw(model, tok, prompts, max_new_tokens=0)


def test_truncate_to_tokens(tiny):
    _, tok = tiny
    assert truncate_to_tokens(tok, "the cat sat on the mat", 4) == "the cat sat"  # BOS + 3 words


def _tiny_data() -> MuseData:
    qa = [
        {"question": "who ran", "answer": "the dog"},
        {"question": "what fell", "answer": "rain"},
        {"question": "where", "answer": "the park"},
    ]
    return MuseData(
        knowmem_forget=qa,
        knowmem_forget_icl=qa[:1],
        knowmem_retain=qa[::-1],
        knowmem_retain_icl=qa[1:2],
        verbmem_forget=[
            {"prompt": "the cat sat", "gt": "on the mat the dog ran"},
            {"prompt": "a bird", "gt": "flew over the house"},
        ],
        privleak_forget=["the cat sat on the mat", "the dog ran to the park"],
        privleak_retain=["rain fell"],
        privleak_holdout=["the bird flew over the house", "rain fell on the park", "who ran"],
    )


def test_evaluate_muse_tiny(tiny):
    model, tok = tiny
    res = evaluate_muse(
        model,
        tok,
        _tiny_data(),
        batch_size=2,
        verbmem_max_new_tokens=5,
        knowmem_max_new_tokens=4,
        privleak_max_length=16,
    )
    assert res["benchmark"] == "muse_news"
    assert set(res["metrics"]) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"}
    assert res["metrics"]["privleak"] is None and res["privleak"] is None
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert 0.0 <= res["metrics"][name] <= 100.0
    per = res["per_example"]
    assert len(per["verbmem_f"]) == 2 and len(per["knowmem_f"]) == 3 and len(per["knowmem_r"]) == 3
    assert len(per["privleak"]["forget"]) == 2 and len(per["privleak"]["holdout"]) == 3
    assert 0.0 <= res["privleak_auc"] <= 1.0
    # gt cut to verbmem_max_new_tokens tokens (BOS + 4 words)
    assert per["verbmem_f"][0]["gt"] == "on the mat the"
    agg = recompute_aggregates(per)
    for name in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert agg[name] == pytest.approx(res["metrics"][name])
    assert agg["privleak_auc"] == res["privleak_auc"]
    add_privleak_reference(res)
    assert math.isfinite(res["metrics"]["privleak"])

    limited = evaluate_muse(
        model, tok, _tiny_data(), metrics=("knowmem_f",), limit=1, knowmem_max_new_tokens=2
    )
    assert (
        set(limited["metrics"]) == {"knowmem_f"} and len(limited["per_example"]["knowmem_f"]) == 1
    )
    assert limited["privleak_auc"] is None
    with pytest.raises(ValueError, match="unknown MUSE metric"):
        evaluate_muse(model, tok, _tiny_data(), metrics=("verbmem",))
    with pytest.raises(ValueError, match="limit"):
        evaluate_muse(model, tok, _tiny_data(), limit=0)


def test_evaluate_muse_scores_a_model_that_outputs_the_answer():
    """A fake model that always emits the answer tokens must get KnowMem 100."""
    from blur_core.tiny import build_tokenizer

    tok = build_tokenizer([WORDS])
    answer_ids = tok("the dog", add_special_tokens=False)["input_ids"]

    class Echo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
            new = torch.tensor(answer_ids + [tok.eos_token_id] * max_new_tokens)[:max_new_tokens]
            return torch.cat([input_ids, new.expand(input_ids.shape[0], -1)], dim=1)

    data = _tiny_data()
    res = evaluate_muse(Echo(), tok, data, metrics=("knowmem_f",), knowmem_max_new_tokens=4)
    f1 = [r["rougeL_f1"] for r in res["per_example"]["knowmem_f"]]
    assert f1[0] == 1.0 and res["per_example"]["knowmem_f"][0]["output"] == "the dog"
    assert f1[1] == 0.0
