"""TOFU metric functions against values worked out by hand, plus the eval-set loader."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from blur_core.eval.tofu import (
    UTILITY_KEYS,
    add_forget_quality,
    forget_quality,
    load_tofu_eval_sets,
    model_utility,
    normalised_probability,
    probability,
    recompute_aggregates,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_forget_score,
    truth_ratio_retain_score,
    utility_values,
)

LN2, LN4 = math.log(2.0), math.log(4.0)
SHARED_DATA = Path(
    os.environ.get(
        "BLUR_SHARED_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    )
)


# ---------------------------------------------------------------------------
# truth ratio
# ---------------------------------------------------------------------------


def test_truth_ratio_is_exp_of_paraphrased_minus_mean_perturbed_nll():
    # example 0: l_para = 1, perturbed mean = (1 + 3)/2 = 2  -> R = exp(1 - 2) = 1/e
    # example 1: l_para = 2, perturbed mean = (2 + 2)/2 = 2  -> R = exp(0)     = 1
    r = truth_ratio([1.0, 2.0], [[1.0, 3.0], [2.0, 2.0]])
    assert r == pytest.approx([math.exp(-1.0), 1.0], rel=1e-12)


def test_truth_ratio_is_geometric_mean_of_perturbed_probabilities_over_paraphrased():
    # P_para = 1/2, P_pert = 1/4 and 1  -> geometric mean = sqrt(1/4 * 1) = 1/2 -> R = (1/2)/(1/2) = 1
    # P_para = 1,   P_pert = 1/2         -> R = (1/2)/1 = 1/2 (ragged rows: K = 1 here)
    r = truth_ratio([LN2, 0.0], [[LN4, 0.0], [LN2]])
    assert r == pytest.approx([1.0, 0.5], rel=1e-12)


def test_truth_ratio_rejects_row_count_mismatch_and_empty_rows():
    with pytest.raises(ValueError, match="perturbed_nll has 1 rows but 2"):
        truth_ratio([1.0, 2.0], [[1.0]])
    with pytest.raises(ValueError, match=r"perturbed_nll\[1\]"):
        truth_ratio([1.0, 2.0], [[1.0], []])
    with pytest.raises(ValueError, match=r"paraphrased_nll\[0\] is not finite"):
        truth_ratio([float("nan")], [[1.0]])


def test_truth_ratio_forget_score_is_mean_of_min_r_and_inverse():
    # R = 0.5, 2, 1 -> min(R, 1/R) = 0.5, 0.5, 1 -> mean = 2/3
    assert truth_ratio_forget_score([0.5, 2.0, 1.0]) == pytest.approx(2.0 / 3.0, rel=1e-12)
    with pytest.raises(ValueError, match="> 0"):
        truth_ratio_forget_score([0.5, 0.0])


def test_truth_ratio_retain_score_is_mean_of_one_minus_r_clipped_at_zero():
    # R = 0.25, 1, 3 -> max(0, 1 - R) = 0.75, 0, 0 -> mean = 0.25
    assert truth_ratio_retain_score([0.25, 1.0, 3.0]) == pytest.approx(0.25, rel=1e-12)
    with pytest.raises(ValueError, match="empty"):
        truth_ratio_retain_score([])


# ---------------------------------------------------------------------------
# probabilities
# ---------------------------------------------------------------------------


def test_probability_is_mean_of_exp_minus_nll():
    # P = exp(-0), exp(-ln 2), exp(-ln 4) = 1, 1/2, 1/4 -> mean = 7/12
    assert probability([0.0, LN2, LN4]) == pytest.approx(7.0 / 12.0, rel=1e-12)


def test_normalised_probability_divides_by_all_options():
    # ex 0: P_c = 1/2, wrong 1/4 + 1/4       -> 0.5 / (0.5 + 0.5)  = 1/2
    # ex 1: P_c = 1,   wrong 3 x 1/4 = 3/4   -> 1 / (1 + 0.75)     = 4/7
    # mean = (1/2 + 4/7) / 2 = 15/28
    value = normalised_probability([LN2, 0.0], [[LN4, LN4], [LN4, LN4, LN4]])
    assert value == pytest.approx(15.0 / 28.0, rel=1e-12)


# ---------------------------------------------------------------------------
# ROUGE, KS, harmonic mean
# ---------------------------------------------------------------------------


def test_rouge_l_recall_uses_stemming():
    preds = ["running dogs", "The dogs ran home", "", "cat"]
    refs = ["the dog runs", "the dog ran", "the dog ran", ""]
    # 0: stems [run, dog] vs reference [the, dog, run]: LCS = 1 ("dog" or "run"; the order
    #    differs) -> recall = 1/3
    # 1: [the, dog, ran, home] vs [the, dog, ran] ("dogs" -> "dog" by stemming): LCS = 3 -> 1.0
    #    (without stemming it would be 2/3)
    # 2: empty prediction -> 0;  3: empty reference -> 0
    assert rouge_l_recall(preds, refs) == pytest.approx([1.0 / 3.0, 1.0, 0.0, 0.0], rel=1e-12)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_l_recall(["a", "b"], ["a"])


def test_forget_quality_is_exact_ks_p_value():
    # identical samples: D = 0 -> p = 1
    assert forget_quality([0.2, 0.5, 0.9], [0.2, 0.5, 0.9]) == pytest.approx(1.0)
    # fully separated 3 vs 3: D = 1; exact two-sided p = P(D >= 1) = 2 / C(6, 3) = 2/20 = 0.1
    # (only the two orderings "all a below all b" and "all b below all a" reach D = 1)
    assert forget_quality([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]) == pytest.approx(0.1, rel=1e-9)
    # fully separated 2 vs 2: 2 / C(4, 2) = 1/3
    assert forget_quality([5.0, 6.0], [1.0, 2.0]) == pytest.approx(1.0 / 3.0, rel=1e-9)


def test_model_utility_is_harmonic_mean_of_nine_values():
    values = {k: 0.5 for k in UTILITY_KEYS}
    values["world_facts_truth_ratio"] = 0.25
    values["forget_rouge"] = 0.0  # not a utility key: ignored
    # 9 / (8 * (1/0.5) + 1/0.25) = 9 / (16 + 4) = 0.45
    assert model_utility(values) == pytest.approx(0.45, rel=1e-12)
    values["retain_rouge"] = 0.0
    assert model_utility(values) == 0.0


def test_model_utility_names_missing_keys_and_bad_values():
    values = {k: 0.5 for k in UTILITY_KEYS}
    del values["retain_probability"], values["real_authors_rouge"]
    with pytest.raises(ValueError, match=r"missing \['retain_probability', 'real_authors_rouge'\]"):
        model_utility(values)
    with pytest.raises(ValueError, match="retain_rouge"):
        model_utility({**{k: 0.5 for k in UTILITY_KEYS}, "retain_rouge": -0.1})


# ---------------------------------------------------------------------------
# aggregates from per-example values
# ---------------------------------------------------------------------------


def _row(answer_nll, paraphrased_nll, perturbed_nll, rouge, question="q"):
    ratio = float(truth_ratio([paraphrased_nll], [perturbed_nll])[0])
    return {
        "question": question,
        "answer": "a",
        "generated": "g",
        "answer_nll": answer_nll,
        "paraphrased_nll": paraphrased_nll,
        "perturbed_nll": perturbed_nll,
        "rouge_l_recall": rouge,
        "truth_ratio": ratio,
    }


def _per_example():
    return {
        # R = exp(0 - ln 2) = 1/2 and exp(ln 2 - 0) = 2 -> min(R, 1/R) = 1/2, 1/2 -> 0.5
        # P = 1/2, 1/4 -> 3/8; ROUGE mean (1 + 0)/2 = 0.5
        "forget": [_row(LN2, 0.0, [LN2, LN2], 1.0, "f0"), _row(LN4, LN2, [0.0, 0.0], 0.0, "f1")],
        # R = exp(0 - ln 4) = 1/4 -> 1 - 1/4 = 3/4; R = exp(ln 4 - ln 2) = 2 -> 0  => 3/8
        # P = 1, 1/2 -> 3/4; ROUGE (0.5 + 0.25)/2 = 0.375
        "retain": [_row(0.0, 0.0, [LN4, LN4], 0.5), _row(LN2, LN4, [LN2], 0.25)],
        # normalised: P_c = 1/2, wrong 1/4 + 1/4 -> 1/2; R = exp(ln 2 - ln 4) = 1/2 -> 1/2
        "real_authors": [_row(LN2, LN2, [LN4, LN4], 0.6)],
        # normalised: P_c = 1, wrong 1 -> 1/2; R = exp(0 - 0) = 1 -> 0
        "world_facts": [_row(0.0, 0.0, [0.0], 1.0)],
    }


def test_recompute_aggregates_matches_hand_computed_values():
    agg = recompute_aggregates(_per_example())
    expected = {
        "forget": {"probability": 3 / 8, "rouge": 0.5, "truth_ratio": 0.5},
        "retain": {"probability": 3 / 4, "rouge": 0.375, "truth_ratio": 3 / 8},
        "real_authors": {"probability": 0.5, "rouge": 0.6, "truth_ratio": 0.5},
        "world_facts": {"probability": 0.5, "rouge": 1.0, "truth_ratio": 0.0},
    }
    assert agg.keys() == expected.keys()
    for s in expected:
        assert agg[s] == pytest.approx(expected[s], rel=1e-12), s
    # world_facts truth ratio is 0 -> model utility 0
    assert model_utility(utility_values(agg)) == 0.0


def test_recompute_aggregates_survives_a_json_round_trip_and_rejects_unknown_sets():
    per_example = _per_example()
    again = recompute_aggregates(json.loads(json.dumps(per_example)))
    assert again == recompute_aggregates(per_example)
    with pytest.raises(ValueError, match="unknown TOFU set"):
        recompute_aggregates({"holdout": per_example["forget"]})


def test_add_forget_quality_uses_forget_truth_ratios_and_checks_questions():
    ours = {"per_example": _per_example()}
    assert add_forget_quality(ours, ours)["forget_quality"] == pytest.approx(1.0)
    other = {"per_example": {"forget": [dict(r) for r in _per_example()["forget"]]}}
    for r, ratio in zip(other["per_example"]["forget"], (50.0, 60.0)):
        r["truth_ratio"] = ratio  # ours: 0.5, 2 vs 50, 60 -> separated 2 vs 2 -> p = 1/3
    assert add_forget_quality(ours, other)["forget_quality"] == pytest.approx(1.0 / 3.0, rel=1e-9)
    other["per_example"]["forget"][1]["question"] = "another question"
    with pytest.raises(ValueError, match="first difference at index 1"):
        add_forget_quality(ours, other)
    with pytest.raises(ValueError, match=r"retain_model_result has no per_example\.forget"):
        add_forget_quality(ours, {"aggregates": {}})


# ---------------------------------------------------------------------------
# loading the TOFU layout
# ---------------------------------------------------------------------------


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _tiny_bench(tmp_path: Path) -> Path:
    full = {
        "question": "q?",
        "answer": "a.",
        "paraphrased_answer": "p.",
        "perturbed_answer": ["x.", "y."],
    }
    short = {"question": "q?", "answer": "a.", "perturbed_answer": ["x.", "y.", "z."]}
    _write_lines(tmp_path / "forget01_perturbed.json", [full, full])
    _write_lines(tmp_path / "retain_perturbed.json", [full, full, full])
    _write_lines(tmp_path / "real_authors_perturbed.json", [short, short])
    _write_lines(tmp_path / "world_facts_perturbed.json", [short])
    return tmp_path


def test_load_tofu_eval_sets_reads_the_four_files(tmp_path):
    sets = load_tofu_eval_sets(_tiny_bench(tmp_path), "forget01")
    assert {k: len(v) for k, v in sets.items()} == {
        "forget": 2,
        "retain": 3,
        "real_authors": 2,
        "world_facts": 1,
    }


def test_load_tofu_eval_sets_names_file_record_and_field(tmp_path):
    bench = _tiny_bench(tmp_path)
    records = [
        json.loads(line) for line in (bench / "retain_perturbed.json").read_text().splitlines()
    ]
    del records[2]["paraphrased_answer"]
    _write_lines(bench / "retain_perturbed.json", records)
    with pytest.raises(
        ValueError, match=r"retain_perturbed\.json: record 2 is missing field 'paraphrased_answer'"
    ):
        load_tofu_eval_sets(bench, "forget01")
    records[2]["paraphrased_answer"] = "p."
    records[1]["perturbed_answer"] = "not a list"
    _write_lines(bench / "retain_perturbed.json", records)
    with pytest.raises(
        ValueError, match=r"retain_perturbed\.json: record 1 field 'perturbed_answer'"
    ):
        load_tofu_eval_sets(bench, "forget01")
    with pytest.raises(FileNotFoundError, match=r"forget05_perturbed\.json"):
        load_tofu_eval_sets(bench, "forget05")
    with pytest.raises(ValueError, match="forget_split"):
        load_tofu_eval_sets(bench, "../forget01")


@pytest.mark.skipif(
    not (SHARED_DATA / "tofu" / "forget01_perturbed.json").is_file(),
    reason=f"real TOFU data not found under {SHARED_DATA} (set BLUR_SHARED_DATA)",
)
def test_real_tofu_files_load_with_expected_counts():
    sets = load_tofu_eval_sets(SHARED_DATA / "tofu", "forget01")
    assert {k: len(v) for k, v in sets.items()} == {
        "forget": 40,
        "retain": 400,
        "real_authors": 100,
        "world_facts": 117,
    }
    assert all(len(r["perturbed_answer"]) >= 3 for rows in sets.values() for r in rows)
    assert sets["world_facts"][0]["answer"] == "Paris" and "paraphrased_answer" in sets["forget"][0]
