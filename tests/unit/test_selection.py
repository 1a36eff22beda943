"""Checkpoint selection (blur_core.selection): the constraint parser, the selection policy
and its record, on hand-made candidate values."""

from __future__ import annotations

import json

import pytest

from blur_core.config import ConfigError
from blur_core.selection import (
    metric_names,
    metric_values,
    parse_constraint,
    parse_selection,
    select_checkpoint,
    select_from_files,
)

REFS = {"target": {"forget_quality": 0.01, "model_utility": 0.6}, "retain": None}


def cands(*points):
    """(step, forget_quality, model_utility) -> candidates; the last one is the final model."""
    return [
        {
            "step": s,
            "final": i == len(points) - 1,
            "values": {"forget_quality": fq, "model_utility": mu},
        }
        for i, (s, fq, mu) in enumerate(points)
    ]


@pytest.mark.parametrize(
    "text, metric, op, value, ref, factor",
    [
        ("model_utility >= 0.95 * target", "model_utility", ">=", None, "target", 0.95),
        ("model_utility>=target*0.9", "model_utility", ">=", None, "target", 0.9),
        ("  forget_quality > 1e-3 ", "forget_quality", ">", 1e-3, None, 1.0),
        ("forget_probability <= retain", "forget_probability", "<=", None, "retain", 1.0),
        ("model_utility < .5", "model_utility", "<", 0.5, None, 1.0),
    ],
)
def test_constraints_parse(text, metric, op, value, ref, factor):
    c = parse_constraint(text, "w")
    assert (c.metric, c.op, c.value, c.ref, c.factor, c.text) == (
        metric,
        op,
        value,
        ref,
        factor,
        text,
    )


@pytest.mark.parametrize(
    "text, match",
    [
        ("model_utility => 0.9", r"w = 'model_utility => 0.9': expected METRIC OP RHS"),
        ("model_utility >= 0.9 * target + 1", "expected METRIC OP RHS"),
        ("__import__('os') >= 1", "expected METRIC OP RHS"),
        ("utility >= 0.9", r"unknown metric 'utility' \(known: \['forget_quality'"),
        ("model_utility >= 0.9 * oracle", "'oracle' is neither a number nor a reference model"),
        ("model_utility >= 2 * 3", "expected METRIC OP RHS"),
        (0.9, "a constraint is a string"),
    ],
)
def test_bad_constraints_name_the_text(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_constraint(text, "w")


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"subject_to": "model_utility >= 0.5"}, "exactly one of maximize and minimize"),
        ({"maximize": "forget_quality", "minimize": "model_utility"}, "exactly one"),
        ({"maximize": "fq"}, r"sel\.maximize = 'fq': unknown metric"),
        ({"maximize": "forget_quality", "subjet_to": "x"}, r"unknown key sel\.subjet_to"),
        (
            {"maximize": "forget_quality", "subject_to": ["model_utility >= 0.5", "bad"]},
            r"sel\.subject_to\[1\] = 'bad'",
        ),
    ],
)
def test_bad_selections(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_selection(spec, "sel")


def test_corpus_protocols_have_their_own_metrics():
    assert "knowmem_f" in metric_names("muse") and "forget_quality" not in metric_names("muse")
    parse_selection({"minimize": "forget_mc_accuracy"}, "w", metric_names("wmdp"))
    with pytest.raises(ConfigError, match="unknown metric"):
        parse_selection({"maximize": "forget_quality"}, "w", metric_names("wmdp"))


def test_best_feasible_checkpoint_wins_and_the_record_says_why():
    sel = parse_selection(
        {"maximize": "forget_quality", "subject_to": "model_utility >= 0.95 * target"}, "w"
    )
    # 0.95 * 0.6 = 0.57: steps 10 and 20 are feasible, 30 has the best forget quality but
    # too little utility, the final one also fails
    rec = select_checkpoint(
        sel, cands((30, 0.5, 0.5), (10, 0.1, 0.65), (20, 0.3, 0.58), (40, 0.9, 0.4)), REFS
    )
    assert rec["selected_step"] == 20 and rec["satisfied"] is True
    assert rec["thresholds"] == {"model_utility >= 0.95 * target": pytest.approx(0.57)}
    assert [c["step"] for c in rec["candidates"]] == [10, 20, 30, 40]
    why = {c["step"]: (c["status"], c["why"]) for c in rec["candidates"]}
    assert why[20][0] == "selected" and "highest forget_quality (0.3)" in why[20][1]
    assert "2 of 4 checkpoints" in rec["reason"]
    assert why[10] == ("rejected", "forget_quality 0.1 is not above the selected 0.3")
    assert (
        why[30][0] == "rejected"
        and "violates model_utility >= 0.95 * target (0.5 vs 0.57)" in why[30][1]
    )
    assert rec["selected"]["final"] is False
    assert rec["criterion"] == {
        "maximize": "forget_quality",
        "subject_to": ["model_utility >= 0.95 * target"],
    }
    json.dumps(rec)  # the record is plain JSON


def test_ties_go_to_the_earlier_step_and_minimize_reverses():
    sel = parse_selection({"maximize": "forget_quality"}, "w")
    rec = select_checkpoint(sel, cands((1, 0.5, 0.1), (2, 0.5, 0.9), (3, 0.2, 0.9)), REFS)
    assert rec["selected_step"] == 1
    assert "tie: the earlier step wins" in rec["candidates"][1]["why"]
    sel = parse_selection({"minimize": "model_utility"}, "w")
    rec = select_checkpoint(sel, cands((1, 0.5, 0.3), (2, 0.5, 0.1), (3, 0.2, 0.9)), REFS)
    assert rec["selected_step"] == 2 and "lowest model_utility" in rec["reason"]


def test_no_feasible_checkpoint_falls_back_to_the_closest_and_says_so():
    sel = parse_selection(
        {"maximize": "forget_quality", "subject_to": "model_utility >= 0.95 * target"}, "w"
    )
    rec = select_checkpoint(sel, cands((1, 0.9, 0.30), (2, 0.1, 0.55), (3, 0.5, 0.2)), REFS)
    assert rec["satisfied"] is False and rec["selected_step"] == 2
    assert rec["reason"].startswith("no checkpoint satisfies 'model_utility >= 0.95 * target'")
    assert "chose step 2, the closest to satisfying it" in rec["reason"]


def test_several_constraints_all_hold_and_a_plain_number_threshold():
    sel = parse_selection(
        {
            "minimize": "model_utility",
            "subject_to": ["model_utility >= 0.2", "forget_quality >= target"],
        },
        "w",
    )
    rec = select_checkpoint(sel, cands((1, 0.005, 0.25), (2, 0.02, 0.3), (3, 0.5, 0.1)), REFS)
    assert rec["selected_step"] == 2
    assert rec["thresholds"] == {"model_utility >= 0.2": 0.2, "forget_quality >= target": 0.01}


def test_unmeasured_values_are_never_chosen_over_measured_ones():
    sel = parse_selection({"maximize": "forget_quality"}, "w")
    rec = select_checkpoint(sel, cands((1, None, 0.9), (2, 0.1, 0.5)), REFS)
    assert rec["selected_step"] == 2
    assert rec["candidates"][0]["why"] == "forget_quality not measured"
    sel = parse_selection(
        {"maximize": "model_utility", "subject_to": "model_utility >= retain"}, "w"
    )
    with pytest.raises(ValueError, match="the retain model's model_utility is not available"):
        select_checkpoint(sel, cands((1, 0.1, 0.9)), REFS)


def test_select_from_files(tmp_path):
    def ev(name, fq, mu):
        path = tmp_path / f"{name}.json"
        path.write_text(
            json.dumps(
                {
                    "forget_quality": fq,
                    "model_utility": mu,
                    "aggregates": {"forget": {"probability": fq}},
                }
            )
        )
        return str(path)

    rec = select_from_files(
        {"minimize": "forget_probability", "subject_to": "model_utility >= 0.9 * target"},
        {2: ev("s2", 0.4, 0.58), 4: ev("s4", 0.2, 0.5)},
        ev("final", 0.1, 0.3),
        6,
        ev("target", 0.9, 0.6),
    )
    assert rec["selected_step"] == 2 and rec["selected"]["eval"].endswith("s2.json")
    assert [c["step"] for c in rec["candidates"]] == [2, 4, 6]
    assert rec["candidates"][-1]["final"] is True
    assert (
        metric_values(json.loads((tmp_path / "s4.json").read_text()))["forget_probability"] == 0.2
    )
