"""Paper-scale pipeline paths on CI-sized data: published target / retain models instead of
fine-tuning, hub ids read offline from a Hugging Face cache, and every training stage on the
DeepSpeed backend."""

from __future__ import annotations

import copy
import csv
import json
import os

import pytest

from tests.hubcache import add_repo
from tests.pipeline.conftest import CI_CONFIG, planned_jobs, run_snakemake, write_config

pytest.importorskip("snakemake")

# one sweep point is enough to compare with the fine-tuned pipeline run
ONE_RUN = {"graddiff": CI_CONFIG["methods"]["graddiff"]}
COMPARED = (
    "forget_quality",
    "model_utility",
    "forget_probability",
    "forget_rouge",
    "retain_probability",
    "forget_mc.accuracy",
    "memorisation.forget_exact_memorisation",
)


def _rows(workdir) -> list[dict]:
    with (workdir / "results/report/summary.csv").open() as fh:
        return list(csv.DictReader(fh))


def _published_config(target, retain, bench=None) -> dict:
    cfg = copy.deepcopy(CI_CONFIG)
    cfg["methods"] = copy.deepcopy(ONE_RUN)
    cfg["evaluations"] = {
        k: v for k, v in cfg["evaluations"].items() if k in ("forget_mc", "memorisation")
    }
    cfg["experiments"] = [{"benchmark": "embedded", "model": "tiny", "target": target}]
    if retain is not None:
        cfg["experiments"][0]["retain"] = retain
    if bench is not None:
        cfg["benchmarks"] = {"embedded": bench}
        cfg["models"] = {"tiny": {"kind": "hf", "source": "org/tiny-base"}}
    return cfg


def _fail_log(workdir, proc) -> str:
    logs = "\n".join(
        f"--- {p}\n{p.read_text()[-1500:]}" for p in (workdir / "results/logs").rglob("*.log")
    )
    return f"{proc.stderr[-4000:]}\n{logs[-6000:]}"


def test_published_dirs_run_no_finetune_and_match_the_fine_tuned_models(pipeline_dir, tmp_path):
    done = pipeline_dir / "results/embedded/tiny/finetune"
    cfg = _published_config(str(done / "target/model"), str(done / "retain/model"))
    # the embedded model kind builds its own base; a published model needs an hf model entry
    cfg["models"] = {"tiny": {"kind": "hf", "source": str(done / "target/model")}}
    cfg["benchmarks"] = {
        "embedded": {
            "kind": "tofu",
            "source": str(pipeline_dir / "results/data/embedded"),
            "forget_split": "forget10",
        }
    }
    write_config(tmp_path, cfg)
    jobs = planned_jobs(run_snakemake(tmp_path, "-n"))
    assert "finetune" not in jobs and "import_model" not in jobs, jobs
    assert jobs["import_published"] == 2 and jobs["unlearn"] == 1
    proc = run_snakemake(tmp_path)
    assert proc.returncode == 0, _fail_log(tmp_path, proc)
    published = {(r["role"], r["entry"], r["hparams"]): r for r in _rows(tmp_path)}
    finetuned = {(r["role"], r["entry"], r["hparams"]): r for r in _rows(pipeline_dir)}
    # the published target and retain models score exactly as the fine-tuned ones. The
    # unlearned run is not compared: read as a TOFU-layout benchmark, the embedded data give
    # the unlearning run one wording of each fact, the embedded benchmark gives it both
    # (its <split>_paraphrased.json), so the two runs train on different data by design
    for key in [("target", "target", ""), ("retain", "retain", "")]:
        ours, theirs = published[key], finetuned[key]
        for col in COMPARED:
            assert ours[col] == theirs[col], (key, col, ours[col], theirs[col])
    key = ("unlearned", "graddiff", "retain_weight=1")
    assert float(published[key]["forget_quality"]) >= 0 and published[key]["model_utility"]
    assert published[("target", "target", "")]["origin"] == "published"
    assert finetuned[("target", "target", "")]["origin"] == "finetune"
    md = (tmp_path / "results/report/summary.md").read_text()
    assert "Published checkpoints (imported, not fine-tuned here)" in md


def test_hub_ids_offline_from_a_filled_cache(pipeline_dir, tmp_path, monkeypatch):
    """`hf download`-style cache in a temp HF_HOME; the pipeline runs with HF_HUB_OFFLINE=1 on
    hub ids only: the TOFU-layout dataset, the published target and retain models. No retain
    model in a second experiment: forget quality is reported as not available."""
    hub = tmp_path / "hf" / "hub"
    done = pipeline_dir / "results/embedded/tiny/finetune"
    add_repo(hub, "org/tiny-target", done / "target/model")
    add_repo(hub, "org/tiny-retain", done / "retain/model")
    add_repo(hub, "org/tofu-mini", pipeline_dir / "results/data/embedded", repo_type="dataset")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    bench = {"kind": "tofu", "source": "org/tofu-mini", "forget_split": "forget10"}
    work = tmp_path / "work"
    work.mkdir()
    cfg = _published_config("org/tiny-target", "org/tiny-retain", bench)
    cfg["relearn"] = {"steps": []}
    write_config(work, cfg)
    proc = run_snakemake(work)
    assert proc.returncode == 0, _fail_log(work, proc)
    rows = {r["role"]: r for r in _rows(work)}
    ref = {r["role"]: r for r in _rows(pipeline_dir)}
    assert rows["target"]["model_utility"] == ref["target"]["model_utility"]
    assert rows["retain"]["forget_quality"] == ref["retain"]["forget_quality"]
    assert 0.0 <= float(rows["unlearned"]["forget_quality"]) <= 1.0

    # a published target without a retain model: forget quality not available, with the reason
    alone = tmp_path / "alone"
    alone.mkdir()
    cfg = _published_config("org/tiny-target", None, bench)
    cfg["relearn"] = {"steps": []}
    cfg["evaluations"] = {}
    write_config(alone, cfg)
    proc = run_snakemake(alone)
    assert proc.returncode == 0, _fail_log(alone, proc)
    rows = _rows(alone)
    assert [r["role"] for r in rows] == ["target", "unlearned"]
    assert all(r["forget_quality"] == "" for r in rows)
    evaluation = json.loads(
        (alone / "results/embedded/tiny/published/target/eval.json").read_text()
    )
    assert evaluation["forget_quality"] is None
    assert "no retain model" in evaluation["unavailable"]["forget_quality"]
    md = (alone / "results/report/summary.md").read_text()
    assert "| n/a |" in md and "n/a, forget_quality: no retain model" in md

    # a hub id missing from the cache fails before any job, naming it and the fix
    missing = tmp_path / "missing"
    missing.mkdir()
    write_config(missing, _published_config("org/not-downloaded", "org/tiny-retain", bench))
    proc = run_snakemake(missing, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "experiments[0].target: model 'org/not-downloaded'" in out, out[-3000:]
    assert "hf download org/not-downloaded" in out and str(hub) in out
    assert not (missing / "results").exists()


@pytest.mark.slow
def test_every_training_stage_on_deepspeed(tmp_path):
    """finetune, unlearn and relearn through the DeepSpeed backend (ZeRO-2, 1 CPU rank) and the
    same launcher; the converted models are evaluated like any other."""
    pytest.importorskip("deepspeed")
    cfg = copy.deepcopy(CI_CONFIG)
    cfg["methods"] = copy.deepcopy(ONE_RUN)
    cfg["evaluations"] = {}
    cfg["finetune"].update(backend="deepspeed", deepspeed_config="zero2", epochs=10)
    cfg["unlearn"].update(backend="deepspeed", deepspeed_config="zero2")
    cfg["relearn"].update(backend="deepspeed", deepspeed_config="zero2")
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path)
    assert proc.returncode == 0, _fail_log(tmp_path, proc)
    root = tmp_path / "results/embedded/tiny"
    for summary in [
        root / "finetune/target/summary.json",
        root / "finetune/retain/summary.json",
        root / "runs/graddiff/retain_weight=1@seed=0/summary.json",
        root / "runs/graddiff/retain_weight=1@seed=0/relearn/k3/summary.json",
    ]:
        s = json.loads(summary.read_text())
        assert s["backend"] == "deepspeed" and s["zero_stage"] == 2, summary
    log = tmp_path / "results/logs/relearn/embedded/tiny/graddiff/retain_weight=1@seed=0/k3.log"
    assert "=== relearn attempt" in log.read_text() and "launch: python -m" in log.read_text()
    assert {r["role"] for r in _rows(tmp_path)} == {"target", "retain", "unlearned", "relearned"}
    assert os.path.getsize(tmp_path / "results/report/tradeoff.png") > 10_000
