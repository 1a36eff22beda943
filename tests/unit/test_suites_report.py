"""Suite configs, tofu_mc items, slice-data, and the report's suite / relearning sections
(built from hand-written result files, no model)."""

from __future__ import annotations

import csv
import json
import random

import pytest
import yaml

from blur_core.cli import main
from blur_core.config import ConfigError
from blur_core.eval.suites import parse_suite, tofu_mc_items
from blur_core.report import (
    _floored_note,
    forgetting_value,
    relearn_recovery,
    tradeoff_series,
    write_report,
)


def test_parse_suite_fills_defaults_and_names_bad_keys():
    cfg = parse_suite({"kind": "mmlu", "source": "d", "limit": 200})
    assert (cfg.split, cfg.limit, cfg.seed, cfg.subjects) == ("test", 200, 0, None)
    with pytest.raises(ConfigError, match=r"evaluations\.x\.kind = 'wmpd'"):
        parse_suite({"kind": "wmpd", "source": "d"}, "evaluations.x")
    with pytest.raises(ConfigError, match=r"unknown key evaluations\.x\.limt"):
        parse_suite({"kind": "wmdp", "source": "d", "limt": 3}, "evaluations.x")
    with pytest.raises(ConfigError, match=r"evaluations\.x\.source is required"):
        parse_suite({"kind": "wmdp"}, "evaluations.x")
    with pytest.raises(ConfigError, match=r"evaluations\.x\.subset = 'bioo'"):
        parse_suite({"kind": "wmdp", "source": "d", "subset": "bioo"}, "evaluations.x")
    with pytest.raises(ConfigError, match="unknown MUSE metric"):
        parse_suite({"kind": "muse", "source": "d", "metrics": ["verbmem"]}, "evaluations.x")


def test_tofu_mc_items_put_the_answer_among_three_perturbed_in_a_seeded_order():
    recs = [
        {
            "question": f"q{i}",
            "answer": f"ans{i}",
            "paraphrased_answer": f"right{i}",
            "perturbed_answer": [f"w{i}a", f"w{i}b", f"w{i}c", "x"],
        }
        for i in range(40)
    ]
    items = tofu_mc_items(recs, "forget", seed=3)
    for i, item in enumerate(items):
        order = list(range(4))
        random.Random(f"3:{i}").shuffle(order)  # the documented rule, recomputed here
        expected = [[f"right{i}", f"w{i}a", f"w{i}b", f"w{i}c"][j] for j in order]
        assert list(item.choices) == expected
        assert item.choices[item.answer] == f"right{i}"
        assert item.source == f"forget:{i}" and item.question == f"q{i}"
    # the correct letter is not always the same
    assert len({item.answer for item in items}) == 4
    assert tofu_mc_items(recs, "forget", seed=3) == items
    # without a paraphrase (utility sets) the answer itself is the true option
    plain = tofu_mc_items(
        [{"question": "q", "answer": "a", "perturbed_answer": ["b", "c", "d"]}], "world_facts"
    )
    assert (
        sorted(plain[0].choices) == ["a", "b", "c", "d"]
        and plain[0].choices[plain[0].answer] == "a"
    )
    with pytest.raises(ValueError, match=r"forget\[1\]: needs >= 3 'perturbed_answer'"):
        tofu_mc_items(
            [recs[0], {"question": "q", "answer": "a", "perturbed_answer": ["b"]}], "forget"
        )


def test_slice_data_takes_the_first_fraction(tmp_path):
    src = tmp_path / "forget.json"
    src.write_text(json.dumps([{"question": f"q{i}", "answer": "a"} for i in range(9)]))
    out = tmp_path / "slice.jsonl"
    assert main(["slice-data", "--input", str(src), "--out", str(out), "--fraction", "0.5"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["question"] for r in rows] == ["q0", "q1", "q2", "q3", "q4"]  # ceil(4.5)
    with pytest.raises(SystemExit, match="holds only 9"):
        main(["slice-data", "--input", str(src), "--out", str(out), "--n", "10"])


def _eval(forget_p, fq):
    aggs = {
        s: {"probability": forget_p if s == "forget" else 0.5, "rouge": 0.4, "truth_ratio": 0.6}
        for s in ("forget", "retain", "real_authors", "world_facts")
    }
    return {"aggregates": aggs, "model_utility": 0.55, "forget_quality": fq}


def _write_unit(unit, forget_p, fq, suites=None, cfg=None):
    unit.mkdir(parents=True)
    (unit / "eval.json").write_text(json.dumps(_eval(forget_p, fq)))
    if cfg:
        (unit / "run_config.yaml").write_text(yaml.safe_dump(cfg))
    for name, (kind, metrics) in (suites or {}).items():
        (unit / "suites").mkdir(exist_ok=True)
        (unit / "suites" / f"{name}.json").write_text(
            json.dumps({"suite": name, "kind": kind, "metrics": metrics})
        )
    return unit / "eval.json"


def test_report_has_suite_tables_relearning_rows_and_plots(tmp_path):
    base = tmp_path / "results" / "emb" / "tiny"

    def suites(acc, kf):
        return {
            "wmdp_bio": ("wmdp", {"accuracy": acc, "n": 200}),
            "muse": ("muse", {"knowmem_f": kf, "knowmem_r": 40.0, "privleak": -3.5}),
        }

    files = [
        _write_unit(base / "finetune" / "target", 0.9, 1e-5, suites(0.40, 60.0)),
        _write_unit(base / "finetune" / "retain", 0.2, 1.0, suites(0.30, 20.0)),
        _write_unit(
            base / "runs" / "blur" / "gamma=0.1@seed=0",
            0.05,
            0.5,
            suites(0.27, 10.0),
            {"method": {"name": "blur"}, "train": {"seed": 0}},
        ),
        _write_unit(
            base / "runs" / "blur" / "gamma=0.1@seed=0" / "relearn" / "k5",
            0.6,
            0.01,
            None,
            {"method": {"name": "sft"}, "train": {"seed": 7}},
        ),
    ]
    out = tmp_path / "report"
    rows = write_report(files, out)
    assert [r["role"] for r in rows] == ["target", "retain", "unlearned", "relearned"]
    relearned = rows[-1]
    assert relearned["relearn_steps"] == 5 and relearned["seed"] == 0  # the unlearning run's seed
    assert relearned["entry"] == "blur" and relearned["hparams"] == "gamma=0.1"
    with open(out / "summary.csv") as fh:
        table = list(csv.DictReader(fh))
    assert (
        float(table[2]["wmdp_bio.accuracy"]) == 0.27 and float(table[0]["muse.knowmem_f"]) == 60.0
    )
    assert table[3]["wmdp_bio.accuracy"] == "" and table[3]["relearn_steps"] == "5"
    md = (out / "summary.md").read_text()
    assert "## wmdp_bio (wmdp)" in md and "## muse (muse)" in md and "## Relearning attack" in md
    relearn_line = next(
        line
        for line in md.splitlines()
        if line.startswith("| emb | tiny | blur | gamma=0.1 | 0 | 5 |")
    )
    # before -> after: forget probability 0.05 -> 0.6, forget quality 0.5 -> 0.01
    assert relearn_line.rstrip(" |").split(" | ")[6:12] == [
        "0.050",
        "0.600",
        "0.400",
        "0.400",
        "0.500",
        "0.010",
    ]
    # what robust looks like: the retain / target levels and where the attack left the model
    assert "emb/tiny: forget probability of the retain model 0.200" in md
    assert relearn_line.rstrip(" |").split(" | ")[-1] == "0.571"  # (0.6 - 0.2) / (0.9 - 0.2)
    assert {p.name for p in (out / "plots").iterdir()} == {
        "wmdp_bio.png",
        "muse.png",
        "relearn.png",
    }
    assert all(p.stat().st_size > 5000 for p in (out / "plots").iterdir())


def _row(entry, value, fq, forget_p, role="unlearned", bench="emb"):
    return {
        "benchmark": bench,
        "model": "tiny",
        "role": role,
        "entry": entry,
        "hparams": f"w={value}" if role == "unlearned" else "",
        "forget_quality": fq,
        "forget_probability": forget_p,
    }


def test_tradeoff_series_joins_points_in_order_of_forgetting_not_of_the_grid():
    rows = [
        _row("target", None, 1e-9, 0.99, role="target"),
        _row("retain", None, 1.0, 0.05, role="retain"),
        # grid order 1, 4, 16 is not the order of forget quality: 0.3, 0.01, 0.8
        _row("npo", 1, 0.3, 0.02),
        _row("npo", 4, 0.01, 0.5),
        _row("npo", 16, 0.8, 0.1),
        # a tie in forget quality (the log axis's floor) goes by forget probability, higher first
        _row("ga", 1, 0.0, 1e-4),
        _row("ga", 2, 0.0, 0.2),
    ]
    series = tradeoff_series(rows)
    assert list(series) == [("emb", "tiny")]
    drawn = {e: [r["hparams"] for r in pts] for e, pts in series[("emb", "tiny")].items()}
    assert drawn == {"ga": ["w=2", "w=1"], "npo": ["w=4", "w=1", "w=16"]}  # target/retain: no line
    # without a retain model the axis is forget probability, least forgotten first
    no_fq = [{**r, "forget_quality": None} for r in rows if r["role"] != "retain"]
    drawn = {
        e: [r["hparams"] for r in pts] for e, pts in tradeoff_series(no_fq)[("emb", "tiny")].items()
    }
    assert drawn == {"ga": ["w=2", "w=1"], "npo": ["w=4", "w=16", "w=1"]}


def test_a_point_below_the_log_floor_says_where_it_really_is():
    target = _row("target", None, 1.5e-18, 0.99, role="target")
    drawn = forgetting_value(target, with_fq=True)
    assert drawn == 1e-12
    assert _floored_note(target, drawn, True) == " (forget quality 1.5e-18, drawn at 1e-12)"
    run = _row("npo", 1, 0.3, 0.02)
    assert _floored_note(run, forgetting_value(run, True), True) == ""  # not moved
    assert _floored_note(target, target["forget_probability"], False) == ""  # no FQ axis


def test_relearn_recovery_places_forget_probability_between_retain_and_target():
    assert relearn_recovery(0.05, 0.05, 0.95) == pytest.approx(0.0)
    assert relearn_recovery(0.95, 0.05, 0.95) == pytest.approx(1.0)
    assert relearn_recovery(0.5, 0.05, 0.95) == pytest.approx(0.5)
    assert relearn_recovery(0.01, 0.05, 0.95) < 0  # below the retain model's level
    assert relearn_recovery(0.5, None, 0.95) is None and relearn_recovery(0.5, 0.3, 0.3) is None


def test_report_without_a_retain_model_says_n_a_and_why(tmp_path):
    """A published target and no retain model: forget quality and PrivLeak are null with a
    reason; the tables print n/a and the reason, the plot falls back to forget probability."""
    base = tmp_path / "results" / "emb" / "tiny"
    reason = "no retain model in this experiment: forget quality compares ..."
    files = []
    for unit, p, cfg in (
        (base / "published" / "target", 0.9, None),
        (base / "runs" / "ga" / "seed=0", 0.1, {"method": {"name": "ga"}, "train": {"seed": 0}}),
    ):
        path = _write_unit(unit, p, None, {"muse": ("muse", {"knowmem_f": 30.0})}, cfg)
        result = json.loads(path.read_text())
        result["unavailable"] = {"forget_quality": reason}
        path.write_text(json.dumps(result))
        suite = json.loads((unit / "suites" / "muse.json").read_text())
        suite["unavailable"] = {"privleak": "no retain model: PrivLeak is relative ..."}
        (unit / "suites" / "muse.json").write_text(json.dumps(suite))
        files.append(path)
    rows = write_report(files, tmp_path / "report")
    assert [r["role"] for r in rows] == ["target", "unlearned"]
    assert rows[0]["origin"] == "published" and rows[1]["origin"] == ""
    assert all(r["forget_quality"] is None and r["muse.privleak"] is None for r in rows)
    md = (tmp_path / "report" / "summary.md").read_text()
    assert md.count("| n/a |") >= 2
    assert f"n/a, forget_quality: {reason}" in md
    assert "n/a, privleak: no retain model: PrivLeak is relative ..." in md
    assert "Published checkpoints (imported, not fine-tuned here): emb/tiny target" in md
    with (tmp_path / "report" / "summary.csv").open() as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["forget_quality"] for r in csv_rows] == ["", ""]  # empty, not a number
    assert (tmp_path / "report" / "tradeoff.png").stat().st_size > 10_000


def test_report_flags_results_of_different_code(tmp_path):
    base = tmp_path / "results" / "emb" / "tiny"
    files = []
    for unit, code, torch_version in (
        (base / "finetune" / "target", "aaaa", "2.13.0"),
        (base / "finetune" / "retain", "aaaa", "2.13.0"),
        (base / "runs" / "ga" / "seed=0", "bbbb", "2.14.1"),
    ):
        path = _write_unit(unit, 0.5, 0.5, cfg={"method": {"name": "ga"}, "train": {"seed": 0}})
        result = json.loads(path.read_text())
        result["provenance"] = {"code": code, "packages": {"torch": torch_version}}
        path.write_text(json.dumps(result))
        files.append(path)
    rows = write_report(files, tmp_path / "report")
    assert [r["eval_code"] for r in rows] == ["aaaa", "aaaa", "bbbb"]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert (
        "**Warning: results of different evaluation code in one table** "
        "(aaaa: target model, retain model; bbbb: ga s0)" in md
    )
    assert "**Warning: different package versions in one table**: eval torch: 2.13.0, 2.14.1" in md


def test_provenance_names_code_packages_data_and_time(tmp_path):
    from blur_core.provenance import file_sha256, provenance

    data = tmp_path / "d.json"
    data.write_text('[{"question": "q", "answer": "a"}]')
    p = provenance("evaluate", config={"b": 1, "a": 2}, data=[data], started="2026-01-01T00:00:00Z")
    for key in (
        "blur_pipeline",
        "git",
        "code",
        "python",
        "packages",
        "devices",
        "world_size",
        "config_hash",
        "data",
        "started",
        "finished",
    ):
        assert key in p, key
    assert p["code"] and len(p["code"]) == 16 and p["packages"]["torch"]
    assert p["data"] == {str(data): file_sha256(data)} and len(file_sha256(data)) == 64
    assert p["config_hash"] == provenance("evaluate", config={"a": 2, "b": 1})["config_hash"]
    assert p["git"] is None or set(p["git"]) == {"commit", "dirty"}


def test_checkpoint_selection_and_report_from_hand_written_evals(tmp_path):
    """select-checkpoint and the report's checkpoint sections through the CLI: the chosen
    step, the fallback when nothing satisfies the constraint, the table and the plot."""
    base = tmp_path / "results" / "emb" / "tiny"
    files = [
        _write_unit(base / "finetune" / "target", 0.9, 1e-5),
        _write_unit(base / "finetune" / "retain", 0.2, 1.0),
    ]
    run = base / "runs" / "blur" / "gamma=0.1@seed=0"
    files.append(
        _write_unit(run, 0.05, 0.5, cfg={"method": {"name": "blur"}, "train": {"seed": 0}})
    )
    (run / "summary.json").write_text(json.dumps({"steps": 6}))
    steps = []
    for n, fq in ((2, 0.1), (4, 0.7)):
        steps.append(_write_unit(run / "steps" / str(n), 0.5, fq))
    utility = {2: 0.56, 4: 0.50, 6: 0.30}  # target 0.55: 0.95 * 0.55 = 0.5225
    for path in [*steps, run / "eval.json"]:
        n = int(path.parent.name) if path.parent.parent.name == "steps" else 6
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "model_utility": utility[n]}))
    sel = run / "selected" / "selection.json"
    common = [
        *("--steps", *map(str, steps)),
        *("--final", str(run / "eval.json"), "--summary", str(run / "summary.json")),
        *("--target", str(base / "finetune/target/eval.json"), "--out", str(sel)),
    ]
    spec = {"maximize": "forget_quality", "subject_to": "model_utility >= 0.95 * target"}
    assert main(["select-checkpoint", "--criterion-json", json.dumps(spec), *common]) == 0
    record = json.loads(sel.read_text())
    # step 4 has the best forget quality but too little utility; only step 2 is feasible
    assert record["selected_step"] == 2 and record["satisfied"] is True
    assert [c["status"] for c in record["candidates"]] == ["selected", "rejected", "rejected"]
    assert record["provenance"]["command"] == "select-checkpoint"
    out = tmp_path / "report"
    main(
        [
            "report",
            *("--out-dir", str(out), "--evals", *map(str, files)),
            *("--checkpoint-evals", *map(str, steps), "--selections", str(sel)),
        ]
    )
    md = (out / "summary.md").read_text()
    assert "| emb | tiny | blur | gamma=0.1 | 0 | 2 * | 0.100 | 0.560 |" in md
    assert "| 6 (final) | 0.500 | 0.300 |" in md
    assert "criterion: maximize forget_quality subject to `model_utility >= 0.95 * target`" in md
    assert record["reason"] in md
    assert (out / "plots" / "checkpoints_emb_tiny.png").stat().st_size > 10_000
    # nothing satisfies a stricter constraint: the closest is chosen, and the record says so
    spec["subject_to"] = "model_utility >= 1.1 * target"
    assert main(["select-checkpoint", "--criterion-json", json.dumps(spec), *common]) == 0
    record = json.loads(sel.read_text())
    assert record["satisfied"] is False and record["selected_step"] == 2
    assert record["reason"].startswith("no checkpoint satisfies")
    # a report without checkpoints has none of these sections
    main(["report", "--out-dir", str(tmp_path / "plain"), "--evals", *map(str, files)])
    assert "Per-checkpoint" not in (tmp_path / "plain" / "summary.md").read_text()
    assert not list((tmp_path / "plain" / "plots").glob("checkpoints_*"))
