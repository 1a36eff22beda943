"""Per-checkpoint evaluation and selection on the embedded default (CI-sized, one run):
unlearn.eval_checkpoints evaluates the run after steps 1 and 2 besides its final model (step
3), unlearn.select picks one of them, and the choice is checked against the criterion
recomputed from the evaluation JSONs alone."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from tests.pipeline.conftest import CI_CONFIG, REPO, planned_jobs, run_snakemake, write_config

CRITERION = {
    "minimize": "forget_probability",
    "subject_to": "model_utility >= 0.95 * target",
}


def checkpoint_config() -> dict:
    cfg = copy.deepcopy(CI_CONFIG)
    cfg.pop("evaluations")
    cfg.pop("relearn")
    cfg["methods"] = {"blur_npo": {**cfg["methods"]["blur_npo"], "grid": {"gamma": [0.3]}}}
    cfg["unlearn"]["train"]["max_steps"] = 3
    cfg["unlearn"]["eval_checkpoints"] = {"every": 1}  # steps 1 and 2; 3 is the final model
    cfg["unlearn"]["select"] = CRITERION
    return cfg


def _fail(proc, workdir):
    logs = "\n".join(
        f"--- {p}\n{p.read_text()[-1500:]}" for p in (workdir / "results/logs").rglob("*.log")
    )
    return f"{proc.stderr[-4000:]}\n{logs[-6000:]}"


def test_checkpoints_are_evaluated_and_one_is_selected_by_the_criterion(tmp_path):
    write_config(tmp_path, checkpoint_config())
    res = tmp_path / "results"
    # the named target: training, the per-step conversions and evaluations, the selection
    proc = run_snakemake(tmp_path, "selected")
    assert proc.returncode == 0, _fail(proc, tmp_path)
    assert not (res / "report").exists()
    run = res / "embedded/tiny/runs/blur_npo/gamma=0.3@seed=0"
    record = json.loads((run / "selected/selection.json").read_text())

    # the criterion recomputed from the eval JSONs alone
    def load(path):
        return json.loads(path.read_text())

    final_step = load(run / "summary.json")["steps"]
    assert final_step == 3
    evals = {1: load(run / "steps/1/eval.json"), 2: load(run / "steps/2/eval.json")}
    evals[final_step] = load(run / "eval.json")
    target = load(res / "embedded/tiny/finetune/target/eval.json")
    assert target["model_utility"] > 0.1  # a real constraint, not a threshold of 0
    threshold = 0.95 * target["model_utility"]
    prob = {s: e["aggregates"]["forget"]["probability"] for s, e in evals.items()}
    utility = {s: e["model_utility"] for s, e in evals.items()}
    feasible = [s for s in sorted(evals) if utility[s] >= threshold]
    assert record["thresholds"] == {CRITERION["subject_to"]: pytest.approx(threshold)}
    assert [c["step"] for c in record["candidates"]] == [1, 2, 3]
    for c in record["candidates"]:
        assert c["values"] == {
            "forget_probability": prob[c["step"]],
            "model_utility": utility[c["step"]],
        }
        assert c["feasible"] == (c["step"] in feasible)
        assert c["status"] == ("selected" if c["step"] == record["selected_step"] else "rejected")
        assert c["why"]
    if feasible:
        expected = min(feasible, key=lambda s: (prob[s], s))
        assert record["satisfied"] is True
    else:  # documented fallback: the one closest to the utility threshold
        expected = max(sorted(evals), key=lambda s: utility[s])
        assert record["satisfied"] is False
        assert record["reason"].startswith("no checkpoint satisfies")
    assert record["selected_step"] == expected, record["reason"]
    assert record["selected"]["final"] == (expected == final_step)
    assert record["provenance"]["code"]
    # the checkpoints' weights are temp (only their eval.json stays), the final model stays
    assert not (run / "steps_weights").exists()
    assert not list(run.glob("steps/*/model"))
    assert (run / "model/model.safetensors").is_file()

    # the rest of the default target is the report only, which shows the steps and the choice
    assert planned_jobs(run_snakemake(tmp_path, "-n")) == {"report": 1, "all": 1}
    proc = run_snakemake(tmp_path)
    assert proc.returncode == 0, _fail(proc, tmp_path)
    md = (res / "report/summary.md").read_text()
    assert "## Per-checkpoint evaluation" in md and "## Checkpoint selection" in md
    assert record["reason"] in md
    assert (res / "report/plots/checkpoints_embedded_tiny.png").stat().st_size > 10_000
    assert len(list((res / "report").glob("summary.csv"))) == 1

    # another criterion reruns the selection and the report, no training or evaluation
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    cfg["unlearn"]["select"] = {"maximize": "model_utility"}
    write_config(tmp_path, cfg)
    jobs = planned_jobs(run_snakemake(tmp_path, "-n"))
    assert jobs == {"select_checkpoint": 1, "report": 1, "all": 1}, jobs
    # an edit to the selection code reruns the same two (its fingerprint covers them only)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(REPO / "Snakefile", repo / "Snakefile")
    for name in ("workflow", "blur_core"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    edited = repo / "blur_core/selection.py"
    edited.write_text(edited.read_text() + "\n_CODE_EDIT_FOR_THE_TEST = 1\n")
    write_config(tmp_path, checkpoint_config())
    jobs = planned_jobs(run_snakemake(tmp_path, "-n", repo=repo))
    assert jobs == {"select_checkpoint": 1, "report": 1, "all": 1}, jobs
    # and the workflow with the checkpoint rules lints clean
    proc = run_snakemake(tmp_path, "--lint")
    assert proc.returncode == 0 and "Lints for" not in proc.stdout + proc.stderr, proc.stdout[
        -3000:
    ]
