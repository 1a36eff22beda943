"""Evaluation on the tiny offline model: batching invariance, TOFU evaluation, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from blur_core.cli import main
from blur_core.data import QADataset, QAFormat, encode_prompt, load_records
from blur_core.eval import (
    SETS,
    answer_nll,
    evaluate_tofu,
    greedy_generate,
    model_utility,
    recompute_aggregates,
    utility_values,
)
from blur_core.losses import nll_loss
from blur_core.models import load_model, load_tokenizer

ROW_KEYS = {
    "question",
    "answer",
    "generated",
    "answer_nll",
    "paraphrased_nll",
    "perturbed_nll",
    "rouge_l_recall",
    "truth_ratio",
}


@pytest.fixture(scope="module")
def target(target_model):
    return load_model(str(target_model)), load_tokenizer(str(target_model))


@pytest.fixture(scope="module")
def base(embedded):
    return load_model(str(embedded["base_model"])), load_tokenizer(str(embedded["base_model"]))


@pytest.fixture(scope="module")
def records(embedded):
    return load_records(embedded["full"])


def _tofu_sets(embedded) -> dict[str, list[dict]]:
    """The embedded records in the four TOFU roles (real_authors/world_facts without paraphrases)."""
    forget, retain = load_records(embedded["forget"]), load_records(embedded["retain"])
    strip = [{k: v for k, v in r.items() if k != "paraphrased_answer"} for r in retain]
    return {
        "forget": forget,
        "retain": retain[:12],
        "real_authors": strip[12:20],
        "world_facts": strip[20:26],
    }


def test_batched_greedy_equals_one_at_a_time(target, records):
    model, tok = target
    questions = [r["question"] for r in records[:21]]
    lengths = {len(encode_prompt(tok, q)) for q in questions}
    assert len(lengths) > 1, "prompts of one length would not exercise left padding"
    batched = greedy_generate(model, tok, questions, batch_size=8, max_new_tokens=16)
    single = [
        greedy_generate(model, tok, [q], batch_size=1, max_new_tokens=16)[0] for q in questions
    ]
    assert batched == single
    # the memorised model answers (not an empty or prompt-echoing string)
    assert sum(g == r["answer"] for g, r in zip(batched, records[:21])) >= 15, batched


def test_greedy_loop_stops_rows_at_eos_and_equals_hf_generate(target, records):
    from blur_core.eval.generation import greedy_decode, left_pad, plain_greedy

    model, tok = target
    assert plain_greedy(model)
    prompts = [encode_prompt(tok, r["question"]) for r in records[:9]]
    input_ids, mask = left_pad(prompts, tok.pad_token_id)
    ours = greedy_decode(model, input_ids, mask, 24, {tok.eos_token_id})
    with torch.no_grad():
        theirs = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=24,
            pad_token_id=tok.pad_token_id,
        )[:, input_ids.shape[1] :].tolist()
    lengths = {len(row) for row in ours}
    assert len(lengths) > 1 and all(row[-1] == tok.eos_token_id for row in ours if len(row) < 24)
    for row, ref in zip(ours, theirs):  # generate pads a finished row after its EOS
        assert ref[: len(row)] == row and all(t == tok.pad_token_id for t in ref[len(row) :])
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model)  # then model.generate decodes, with its processors
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_batched_answer_nll_equals_one_at_a_time_and_training_loss(target, records):
    model, tok = target
    questions = [r["question"] for r in records[:20]]
    answers = [
        r["perturbed_answer"][0] if i % 2 else r["paraphrased_answer"]
        for i, r in enumerate(records[:20])
    ]
    batched = answer_nll(model, tok, questions, answers, batch_size=6, max_length=64)
    single = torch.cat(
        [
            answer_nll(model, tok, [q], [a], batch_size=1, max_length=64)
            for q, a in zip(questions, answers)
        ]
    )
    assert batched.shape == (20,)
    assert torch.allclose(batched, single, atol=1e-5, rtol=0), (batched - single).abs().max()
    # one example equals the training loss of the same pair (same prompt, answer + EOS)
    ds = QADataset([{"question": questions[3], "answer": answers[3]}], tok, max_length=64)
    with torch.no_grad():
        item = ds[0]
        loss = nll_loss(model(input_ids=item["input_ids"][None]).logits, item["labels"][None])
    assert float(batched[3]) == pytest.approx(float(loss), abs=1e-5)
    # truncation to max_length is reported, and the kept answer tokens are still scored
    with pytest.warns(UserWarning, match="20 of 20 examples exceed max_length=16"):
        short = answer_nll(model, tok, questions, answers, batch_size=6, max_length=16)
    assert torch.isfinite(short).all() and not torch.allclose(short, batched)


def _candidate_pairs(records) -> tuple[list[str], list[str]]:
    """TOFU's scoring workload: every question with its answer, paraphrase and perturbed answers."""
    questions, answers = [], []
    for r in records:
        for a in [r["answer"], r["paraphrased_answer"], *r["perturbed_answer"]]:
            questions.append(r["question"])
            answers.append(a)
    return questions, answers


def test_packed_answer_nll_equals_padded_path(target, records):
    model, tok = target
    questions, answers = _candidate_pairs(records[:12])
    assert len(set(questions)) < len(questions), "no shared prompts: sharing not exercised"
    padded = answer_nll(
        model, tok, questions, answers, batch_size=6, max_length=64, scoring="padded"
    )
    packed = answer_nll(
        model, tok, questions, answers, max_length=64, scoring="packed", batch_tokens=256
    )
    assert answer_nll(model, tok, questions[:3], answers[:3], max_length=64).shape == (3,)
    delta = float((packed - padded).abs().max())
    assert delta <= 1e-4, delta
    # truncated answers are scored on the kept tokens on both paths
    with pytest.warns(UserWarning, match="exceed max_length=16"):
        short_packed = answer_nll(model, tok, questions, answers, max_length=16, scoring="packed")
    with pytest.warns(UserWarning, match="exceed max_length=16"):
        short_padded = answer_nll(model, tok, questions, answers, max_length=16, scoring="padded")
    assert float((short_packed - short_padded).abs().max()) <= 1e-4
    with pytest.raises(ValueError, match="scoring must be one of"):
        answer_nll(model, tok, questions, answers, scoring="fast")


def _numbers(tree, prefix=""):
    """Every number of a JSON tree, by its path (strings must match exactly)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}.{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _numbers(value, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def test_evaluate_tofu_packed_equals_padded_path(target, embedded):
    model, tok = target
    sets = _tofu_sets(embedded)
    results = {
        scoring: evaluate_tofu(
            model,
            tok,
            sets,
            QAFormat(),
            batch_size=8,
            max_new_tokens=16,
            max_length=64,
            scoring=scoring,
        )
        for scoring in ("padded", "packed")
    }
    old, new = (dict(_numbers(results[s])) for s in ("padded", "packed"))
    assert old.keys() == new.keys()
    worst = 0.0
    for path, value in old.items():
        if isinstance(value, str):
            assert new[path] == value, path
        else:
            worst = max(worst, abs(new[path] - value))
    assert worst <= 1e-4, worst
    assert len(old) > 200  # every per-example value and aggregate was compared


@pytest.mark.slow
def test_packed_answer_nll_equals_padded_path_on_smollm2(smollm2_dir, shared_data):
    model, tok = load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    records = load_records(shared_data / "tofu" / "forget01_perturbed.json")[:4]
    questions, answers = _candidate_pairs(records)
    padded = answer_nll(model, tok, questions, answers, batch_size=8, scoring="padded")
    packed = answer_nll(model, tok, questions, answers, scoring="packed")
    delta = float((packed - padded).abs().max())
    assert delta <= 1e-4, delta


def test_evaluate_tofu_keys_values_and_memorisation(target, base, embedded):
    sets = _tofu_sets(embedded)
    results = {
        name: evaluate_tofu(m, t, sets, QAFormat(), batch_size=8, max_new_tokens=16, max_length=64)
        for name, (m, t) in (("target", target), ("base", base))
    }
    res = results["target"]
    assert set(res) == {"per_example", "aggregates", "model_utility"}
    for name in SETS:
        rows = res["per_example"][name]
        assert len(rows) == len(sets[name])
        for row, record in zip(rows, sets[name]):
            assert set(row) == ROW_KEYS and row["question"] == record["question"]
            assert len(row["perturbed_nll"]) == len(record["perturbed_answer"])
            values = [
                row["answer_nll"],
                row["paraphrased_nll"],
                *row["perturbed_nll"],
                row["rouge_l_recall"],
                row["truth_ratio"],
            ]
            assert all(math.isfinite(v) for v in values), row
        assert set(res["aggregates"][name]) == {"probability", "rouge", "truth_ratio"}
        assert all(0.0 <= v <= 1.0 for v in res["aggregates"][name].values()), res["aggregates"][
            name
        ]
    # no paraphrase on the utility sets: the answer plays that role
    assert all(r["paraphrased_nll"] == r["answer_nll"] for r in res["per_example"]["world_facts"])
    # (the memorised model ranks the templated perturbed answers above the unseen paraphrases,
    # so R > 1 on retain and utility may be 0 here; the value must still be the harmonic mean)
    assert res["model_utility"] == model_utility(utility_values(res["aggregates"]))
    assert 0.0 <= res["model_utility"] <= 1.0
    # JSON-serialisable, and the aggregates are recomputable from the per-example values alone
    again = json.loads(json.dumps(res))
    assert recompute_aggregates(again["per_example"]) == res["aggregates"]
    # the memorised target beats the untrained base on the forget set
    tgt, bas = results["target"]["aggregates"]["forget"], results["base"]["aggregates"]["forget"]
    assert tgt["probability"] > bas["probability"] + 0.3, (tgt, bas)
    assert tgt["rouge"] > bas["rouge"] + 0.3, (tgt, bas)


def _write_bench(embedded, out) -> None:
    """A TOFU-layout benchmark dir (JSON lines in .json files) from the embedded records."""
    out.mkdir()
    files = {
        "forget01_perturbed.json": "forget",
        "retain_perturbed.json": "retain",
        "real_authors_perturbed.json": "real_authors",
        "world_facts_perturbed.json": "world_facts",
    }
    sets = _tofu_sets(embedded)
    for file, name in files.items():
        (out / file).write_text("".join(json.dumps(r) + "\n" for r in sets[name]))


def test_cli_evaluate_writes_json_with_forget_quality(embedded, target_model, tmp_path, capsys):
    bench = tmp_path / "bench"
    _write_bench(embedded, bench)
    common = [
        "--benchmark-dir",
        str(bench),
        "--forget-split",
        "forget01",
        "--limit",
        "6",
        "--batch-size",
        "4",
        "--max-new-tokens",
        "12",
        "--max-length",
        "64",
    ]
    ref = tmp_path / "ref" / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(embedded["base_model"]),
                "--out",
                str(ref),
                "--self-reference",
                *common,
            ]
        )
        == 0
    )
    ref_result = json.loads(ref.read_text())
    assert ref_result["forget_quality"] == pytest.approx(1.0)
    assert all(len(rows) == 6 for rows in ref_result["per_example"].values())
    out = tmp_path / "target.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(target_model),
                "--out",
                str(out),
                "--retain-result",
                str(ref),
                *common,
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert 0.0 <= result["forget_quality"] <= 1.0 and result["forget_quality"] < 1.0
    assert set(result) == {
        "per_example",
        "aggregates",
        "model_utility",
        "forget_quality",
        "provenance",
    }
    assert result["provenance"]["command"] == "evaluate"
    assert '"model_utility"' in capsys.readouterr().out
    # a missing field is reported with file, record and field, without a traceback
    (bench / "world_facts_perturbed.json").write_text(
        json.dumps({"question": "q", "answer": "a"}) + "\n"
    )
    with pytest.raises(
        SystemExit,
        match=r"world_facts_perturbed\.json: record 0 is missing field 'perturbed_answer'",
    ):
        main(["evaluate", "--model", str(target_model), "--out", str(out), *common])
