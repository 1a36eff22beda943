"""configs/demo-all-tasks.yaml end to end: the three task families (TOFU-style QA, a MUSE-like
corpus, a WMDP-like corpus) on embedded data, and the rerun scope of a corpus's evaluation."""

from __future__ import annotations

import csv
import shutil

import pytest
import yaml

from tests.pipeline.conftest import REPO, planned_jobs, run_snakemake

RESULTS = "results/demo-all-tasks"


@pytest.fixture(scope="module")
def all_tasks(tmp_path_factory):
    work = tmp_path_factory.mktemp("all_tasks")
    shutil.copy(REPO / "configs/demo-all-tasks.yaml", work / "study.yaml")
    proc = run_snakemake(work, configfile="study.yaml", timeout=1800)
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-1500:]}" for p in (work / RESULTS / "logs").rglob("*.log")
        )
        raise AssertionError(f"demo-all-tasks failed:\n{proc.stderr[-4000:]}\n{logs[-8000:]}")
    return work


def _rows(work) -> list[dict]:
    with (work / RESULTS / "report/summary.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_three_task_families_in_one_study(all_tasks):
    rows = [r for r in _rows(all_tasks) if r["role"] != "relearned"]
    by = {}
    for r in rows:
        by.setdefault(r["benchmark"], []).append(r)
    # TOFU-style QA: target, retain, 2 runs, with the TOFU metrics
    qa = by["people_qa"]
    assert [r["role"] for r in qa] == ["target", "retain", "unlearned", "unlearned"]
    assert all(r["protocol"] == "qa" and 0 <= float(r["model_utility"]) <= 1 for r in qa)
    assert all(r["forget_quality"] != "" for r in qa)
    # MUSE protocol: fine-tuned target and retain model; VerbMem / KnowMem / PrivLeak
    muse = by["news_like"]
    assert [r["role"] for r in muse] == ["target", "retain", "unlearned", "unlearned"]
    for r in muse:
        assert r["protocol"] == "muse" and r["model_utility"] == ""
        for col in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"):
            assert 0.0 <= float(r[col]) <= 100.0 or col == "privleak", (col, r[col])
    assert float(muse[1]["privleak"]) == 0.0  # the retain model is PrivLeak's reference
    # WMDP protocol: no retain model; forget and utility accuracy
    wmdp = by["hazard_like"]
    assert [r["role"] for r in wmdp] == ["target", "unlearned", "unlearned"]
    assert {r["entry"] for r in wmdp[1:]} == {"blur_rmu", "rmu"}  # experiments[2].methods
    for r in wmdp:
        assert r["protocol"] == "wmdp"
        assert 0.0 <= float(r["forget_mc_accuracy"]) <= 1.0
        assert 0.0 <= float(r["utility_mc_accuracy"]) <= 1.0
    # relearning on a slice of each forget corpus / set
    relearned = [r for r in _rows(all_tasks) if r["role"] == "relearned"]
    assert {r["benchmark"] for r in relearned} == {"people_qa", "news_like", "hazard_like"}
    md = (all_tasks / RESULTS / "report/summary.md").read_text()
    assert "## MUSE protocol (text corpora)" in md and "## WMDP protocol" in md
    assert "before_verbmem_f" in md and "before_forget_mc_accuracy" in md
    plots = {p.name for p in (all_tasks / RESULTS / "report/plots").iterdir()}
    assert {"muse_news_like_tiny.png", "wmdp_hazard_like_tiny.png"} <= plots


@pytest.mark.slow
def test_editing_a_corpus_evaluation_reruns_only_its_evaluations(all_tasks, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(all_tasks, work, symlinks=True, copy_function=shutil.copy2)
    assert planned_jobs(run_snakemake(work, "-n", configfile="study.yaml")) == {}
    cfg = yaml.safe_load((work / "study.yaml").read_text())
    cfg["benchmarks"]["news_like"]["evaluate"]["verbmem_max_new_tokens"] = 6
    (work / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_snakemake(work, "-n", configfile="study.yaml")
    jobs = planned_jobs(proc)
    # news_like's target, retain, 2 runs and 2 relearned runs (their weights are temp)
    assert jobs == {"evaluate": 6, "relearn": 2, "report": 1, "all": 1}, jobs
    text = proc.stdout + proc.stderr
    planned = "".join(
        ln for ln in text.splitlines() if ln.strip().startswith(("output:", "wildcards:"))
    )
    assert "news_like" in planned and "people_qa" not in planned and "hazard_like" not in planned
