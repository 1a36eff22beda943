"""The Snakemake pipeline end to end on the embedded default (CI-sized), rerun scope,
lint, and configuration errors caught before any job starts."""

from __future__ import annotations

import copy
import csv
import itertools
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import (
    CI_CONFIG,
    N_RUNS,
    REPO,
    planned_jobs,
    run_snakemake,
    write_config,
)

N_UNITS = 2 + N_RUNS  # target, retain, runs: what evaluate_suites runs on
N_EVALS = N_UNITS + N_RUNS  # + one relearned copy of each run


def _edit(workdir, mutate):
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    mutate(cfg)
    write_config(workdir, cfg)


def test_end_to_end_summary(pipeline_dir):
    rows = list(csv.DictReader((pipeline_dir / "results/report/summary.csv").open()))
    assert len(rows) == N_EVALS
    assert [r["role"] for r in rows] == ["target", "retain"] + ["unlearned"] * N_RUNS + [
        "relearned"
    ] * N_RUNS
    relearned, rows = rows[2 + N_RUNS :], rows[: 2 + N_RUNS]
    for col in (
        "benchmark",
        "model",
        "entry",
        "method",
        "hparams",
        "seed",
        "forget_quality",
        "model_utility",
        "forget_probability",
        "forget_rouge",
        "retain_probability",
        "train_wall_s",
    ):
        assert col in rows[0], col
    runs = {(r["entry"], r["hparams"]) for r in rows[2:]}
    assert runs == {
        ("blur_npo", "gamma=0.1"),
        ("blur_npo", "gamma=0.3"),
        ("graddiff", "retain_weight=1"),
    }
    retain = rows[1]
    assert float(retain["forget_quality"]) == pytest.approx(1.0)
    for r in rows:
        assert 0.0 <= float(r["model_utility"]) <= 1.0
        assert 0.0 <= float(r["forget_quality"]) <= 1.0
    # unlearning lowered the probability of the forget answers relative to the target
    target_p = float(rows[0]["forget_probability"])
    assert all(float(r["forget_probability"]) < target_p for r in rows[2:])
    png = pipeline_dir / "results/report/tradeoff.png"
    assert png.stat().st_size > 10_000
    # evaluation suites: one column per metric, a value for every model
    for r in rows:
        assert (
            0.0 <= float(r["forget_mc.accuracy"]) <= 1.0 and int(float(r["forget_mc.n"])) == 6
        )  # 2 people x 3 QA
        for key in (
            "forget_exact_memorisation",
            "forget_extraction_strength",
            "mia_loss_auc",
            "mia_minkpp_auc",
        ):
            assert 0.0 <= float(r[f"memorisation.{key}"]) <= 1.0, key
        for suite in [
            s for s in CI_CONFIG["evaluations"] if s not in ("forget_mc", "memorisation")
        ]:
            metric = {"muse_news": "knowmem_f"}.get(suite, "accuracy")
            assert r[f"{suite}.{metric}"] != "", (suite, metric)
    # the target model has memorised the forget answers better than the retain model
    assert float(rows[0]["memorisation.forget_exact_memorisation"]) > float(
        rows[1]["memorisation.forget_exact_memorisation"]
    )
    assert float(rows[0]["forget_mc.accuracy"]) >= float(rows[1]["forget_mc.accuracy"])
    if "muse_news" in CI_CONFIG["evaluations"]:
        assert float(rows[1]["muse_news.privleak"]) == 0.0  # the retain model is its own reference
    # relearning: same runs, K steps, then evaluated like any model
    assert {(r["entry"], r["hparams"], r["relearn_steps"]) for r in relearned} == {
        (e, h, "3") for e, h in runs
    }
    assert all(0.0 <= float(r["forget_quality"]) <= 1.0 for r in relearned)
    md = (pipeline_dir / "results/report/summary.md").read_text()
    assert "## forget_mc (tofu_mc)" in md and "## memorisation (memorisation)" in md
    assert "## Relearning attack" in md
    plots = {p.name for p in (pipeline_dir / "results/report/plots").iterdir()}
    assert {"forget_mc.png", "memorisation.png", "relearn.png"} <= plots
    # relearned weights are temp() as well
    assert not list((pipeline_dir / "results").rglob("relearn/k3/model"))
    # raw final weights are temp(): removed once converted
    assert not list((pipeline_dir / "results").rglob("final"))
    assert len(list((pipeline_dir / "results").rglob("runs/*/*/model/model.safetensors"))) == N_RUNS


def test_the_benchmark_tells_the_truth(pipeline_dir):
    """Issue 18 item 4's conditions on the default demo, checked at CI size on the shared
    pipeline run: the target is far from the retain model in forget quality (it knows the
    forget set); the retain model's utility is the target's (utility does not hinge on the
    forget set); no unlearned model beats the target's utility by more than 0.02 (unlearning
    must not look like it improves utility); the trade-off lines follow the forgetting axis.

    One bound is looser here than on the default: CI's forget set has 6 questions (2 people x
    3), so its KS p-values are coarse (measured: target 0.026) and the default's
    ``target forget quality <= 0.01`` (40 questions, measured 4e-16) is checked as <= 0.05."""
    from blur_core.report import build_rows, tradeoff_series

    rows = list(csv.DictReader((pipeline_dir / "results/report/summary.csv").open()))
    target, retain = rows[0], rows[1]
    assert (target["role"], retain["role"]) == ("target", "retain")
    assert float(target["forget_quality"]) <= 0.05
    assert abs(float(retain["model_utility"]) - float(target["model_utility"])) <= 0.05
    unlearned = [r for r in rows if r["role"] == "unlearned"]
    assert len(unlearned) == N_RUNS
    for r in unlearned:
        assert float(r["model_utility"]) <= float(target["model_utility"]) + 0.02, r["hparams"]
    evals = [p for p in (pipeline_dir / "results").rglob("eval.json") if "relearn" not in p.parts]
    series = tradeoff_series(build_rows(evals))[("embedded", "tiny")]
    assert set(series) == set(CI_CONFIG["methods"])
    for entry, points in series.items():
        fq = [r["forget_quality"] for r in points]
        assert fq == sorted(fq), entry


def test_second_run_does_nothing(pipeline_copy):
    t0 = time.perf_counter()
    proc = run_snakemake(pipeline_copy)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert elapsed < 30, f"no-op rerun took {elapsed:.1f}s"


def test_evaluation_setting_reruns_evaluate_and_report_only(pipeline_copy):
    _edit(pipeline_copy, lambda c: c["evaluate"].update(max_new_tokens=6))
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n"))
    # relearned weights are temp(): re-evaluating them means redoing the K relearning steps
    assert jobs == {"evaluate": N_EVALS, "relearn": N_RUNS, "report": 1, "all": 1}


def test_suite_setting_reruns_evaluate_suites_and_report_only(pipeline_copy):
    _edit(pipeline_copy, lambda c: c["evaluations"]["forget_mc"].update(limit=5))
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n"))
    assert jobs == {"evaluate_suites": N_UNITS, "report": 1, "all": 1}


def test_relearn_setting_reruns_relearning_only(pipeline_copy):
    _edit(pipeline_copy, lambda c: c["relearn"].update(lr=1e-3))
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n"))
    assert jobs == {"relearn": N_RUNS, "evaluate": N_RUNS, "report": 1, "all": 1}


def test_one_gamma_reruns_only_that_chain(pipeline_copy):
    _edit(pipeline_copy, lambda c: c["methods"]["blur_npo"]["grid"].update(gamma=[0.1, 0.5]))
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n"))
    assert jobs == {
        "unlearn": 1,
        "convert": 1,
        "evaluate": 2,
        "evaluate_suites": 1,
        "relearn": 1,
        "report": 1,
        "all": 1,
    }


def test_finetune_epochs_rerun_everything_downstream(pipeline_copy):
    _edit(pipeline_copy, lambda c: c["finetune"].update(epochs=21))
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n"))
    assert jobs == {
        "finetune": 2,
        "unlearn": N_RUNS,
        "convert": N_RUNS,
        "evaluate": N_EVALS,
        "evaluate_suites": N_UNITS,
        "relearn": N_RUNS,
        "report": 1,
        "all": 1,
    }


def test_unrelated_file_reruns_nothing(pipeline_copy):
    (pipeline_copy / "notes.txt").write_text("unrelated")
    (REPO / "README.md").stat()  # the repo's own files are not inputs either
    assert planned_jobs(run_snakemake(pipeline_copy, "-n")) == {}


def test_lint_is_clean(tmp_path):
    write_config(tmp_path, copy.deepcopy(CI_CONFIG))
    proc = run_snakemake(tmp_path, "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]


def test_configfile_is_the_whole_experiment(tmp_path):
    # a study file given with --configfile is not merged over the config.yaml beside it: a key
    # it leaves out (evaluations, relearn, a method) is the schema default, not config.yaml's
    write_config(tmp_path, copy.deepcopy(CI_CONFIG))
    study = {
        k: v for k, v in copy.deepcopy(CI_CONFIG).items() if k not in ("evaluations", "relearn")
    }
    study["methods"] = {"graddiff": CI_CONFIG["methods"]["graddiff"]}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    jobs = planned_jobs(run_snakemake(tmp_path, "-n", configfile="study.yaml"))
    assert jobs["unlearn"] == 1 and jobs["evaluate"] == 3
    assert "evaluate_suites" not in jobs and "relearn" not in jobs
    assert (
        planned_jobs(run_snakemake(tmp_path, "-n"))["unlearn"] == N_RUNS
    )  # config.yaml alone: all of it
    # --config overrides one key of the study file and keeps the rest of it
    proc = run_snakemake(tmp_path, "-n", "--config", "results=elsewhere", configfile="study.yaml")
    assert planned_jobs(proc)["unlearn"] == 1 and "elsewhere/report/summary.csv" in proc.stdout


@pytest.mark.parametrize("study", ["study-embedded", "study-tofu-smollm2"])
def test_committed_study_configs_are_valid(study):
    # the study files under configs/ pass the schema and blur_core's hyperparameter checks
    # and plan their whole sweep (a dry run in the repo: nothing is written but .snakemake/)
    cfg = yaml.safe_load((REPO / "configs" / f"{study}.yaml").read_text())
    for bench in cfg["benchmarks"].values():
        if bench.get("source") and not (REPO / bench["source"]).is_dir():
            pytest.skip(f"{study}: no data at {bench['source']} (BLUR_SHARED_DATA layout)")
    proc = run_snakemake(REPO, "-n", configfile=f"configs/{study}.yaml")
    runs = len(cfg["unlearn"]["seeds"]) * sum(
        len(list(itertools.product(*m.get("grid", {}).values()))) for m in cfg["methods"].values()
    )
    jobs = planned_jobs(proc)
    if not (REPO / cfg["results"]).exists():  # a fresh clone (CI): the whole study is planned
        assert jobs["unlearn"] == runs and jobs["evaluate"] == runs + 2 and jobs["report"] == 1, (
            jobs
        )
    else:  # this checkout has run (part of) it already
        assert jobs.get("unlearn", 0) <= runs, jobs


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["finetune"].update(epocs=3), ["epocs", "config.yaml"]),
        (lambda c: c["unlearn"].update(seeds="zero"), ["seeds", "config.yaml"]),
        (lambda c: c["methods"].update(bad={"method": "blurr"}), ["blurr", "config.yaml"]),
        (
            lambda c: c["methods"]["blur_npo"]["fixed"].update(gama=0.1),
            ["gama", "methods.blur_npo", "config.yaml"],
        ),
        (
            lambda c: c["benchmarks"].update(real={"kind": "tofu", "source": "./no/such/dir"}),
            ["benchmarks.real.source", "./no/such/dir", "config.yaml"],
        ),
        (
            lambda c: c["evaluations"].update(x={"kind": "wmpd", "source": "."}),
            ["evaluations", "wmpd", "config.yaml"],
        ),
        (
            lambda c: c["evaluations"].update(x={"kind": "wmdp", "source": ".", "subsett": "bio"}),
            ["evaluations.x.subsett", "config.yaml"],
        ),
        (
            lambda c: c["evaluations"].update(x={"kind": "mmlu", "source": "./no/mmlu"}),
            ["evaluations.x.source", "./no/mmlu", "config.yaml"],
        ),
        (lambda c: c["relearn"].update(fraction=0), ["fraction", "config.yaml"]),
        (
            lambda c: c["benchmarks"]["embedded"].update(retain_limit=10),
            ["benchmarks.embedded.retain_limit applies to kind tofu only", "config.yaml"],
        ),
    ],
    ids=[
        "misspelled-key",
        "wrong-type",
        "unknown-method",
        "unknown-hparam",
        "missing-data-path",
        "unknown-suite-kind",
        "unknown-suite-key",
        "missing-suite-data",
        "bad-relearn-fraction",
        "retain-limit-on-embedded",
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, mutate, expected):
    cfg = copy.deepcopy(CI_CONFIG)
    mutate(cfg)
    write_config(tmp_path, cfg)
    proc = run_snakemake(tmp_path, "-n")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for text in expected:
        assert text in out, f"{text!r} not in:\n{out[-3000:]}"
    assert not (tmp_path / "results").exists()


def test_paper_scale_tofu_config_plans_its_protocol(tmp_path, monkeypatch):
    """configs/tofu-llama-3.2-1b.yaml (published models by hub id): the planned jobs, and
    offline without a filled cache the first missing id named before anything runs."""
    (tmp_path / "study.yaml").write_text((REPO / "configs/tofu-llama-3.2-1b.yaml").read_text())
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: ids are not checked (nothing is loaded)
    jobs = planned_jobs(run_snakemake(tmp_path, "-n", configfile="study.yaml"))
    assert jobs == {
        "prepare_data": 3,
        "import_published": 6,
        "unlearn": 72,
        "convert": 72,
        "evaluate": 78,
        "report": 1,
        "all": 1,
    }, jobs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    proc = run_snakemake(tmp_path, "-n", configfile="study.yaml")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'open-unlearning/tofu_Llama-3.2-1B-Instruct_full' is a hub id" in out, out[-2000:]
    assert "hf download open-unlearning/tofu_Llama-3.2-1B-Instruct_full" in out


@pytest.mark.parametrize(
    "study, jobs",
    [
        # 2 corpora x 2 sweep points: import the base once per experiment, no fine-tuning
        (
            "wmdp-zephyr-7b",
            {
                "prepare_data": 2,
                "import_published": 2,
                "unlearn": 4,
                "convert": 4,
                "evaluate": 6,
                "report": 1,
                "all": 1,
            },
        ),
        # fine-tuned target and retain model on the corpus, 3 sweep points
        (
            "study-muse-news-smollm2",
            {
                "prepare_data": 1,
                "import_model": 1,
                "finetune": 2,
                "unlearn": 3,
                "convert": 3,
                "evaluate": 5,
                "report": 1,
                "all": 1,
            },
        ),
    ],
)
def test_corpus_study_configs_plan_their_protocol(study, jobs, tmp_path, monkeypatch):
    """The real-data corpus configs plan exactly their protocol's jobs (a dry run in a fresh
    dir; their data paths are relative to the repository, so the config is run from there)."""
    cfg = yaml.safe_load((REPO / "configs" / f"{study}.yaml").read_text())
    for b in cfg["benchmarks"].values():
        for key in ("source", "wmdp_source", "mmlu_source"):
            if key in b and not b[key].startswith("../"):
                b[key] = str(tmp_path / "data" / key)  # stand-ins for data fetched later
                (tmp_path / "data" / key).mkdir(parents=True, exist_ok=True)
            elif key in b:
                if not (REPO / b[key]).is_dir():
                    pytest.skip(f"{study}: no data at {b[key]}")
                b[key] = str(REPO / b[key])
    cfg["results"] = "results"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the hub ids are not checked online
    assert planned_jobs(run_snakemake(tmp_path, "-n", configfile="study.yaml")) == jobs


@pytest.fixture()
def repo_copy(tmp_path) -> Path:
    """A copy of the code the workflow runs (Snakefile, workflow/, blur_core/) to edit."""
    dst = tmp_path / "repo"
    dst.mkdir()
    shutil.copy2(REPO / "Snakefile", dst / "Snakefile")
    for name in ("workflow", "blur_core"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize(
    "edit, expected",
    [
        # evaluation code: every evaluation (the relearned models' weights are temp), the suites
        # (evaluate-suites imports the TOFU module too) and the report; no training job
        (
            "eval/tofu.py",
            {
                "evaluate": N_EVALS,
                "evaluate_suites": N_UNITS,
                "relearn": N_RUNS,
                "report": 1,
                "all": 1,
            },
        ),
        # a loss: every training job (fine-tunes included: sft's NLL) and all downstream
        (
            "losses.py",
            {
                "finetune": 2,
                "unlearn": N_RUNS,
                "convert": N_RUNS,
                "evaluate": N_EVALS,
                "evaluate_suites": N_UNITS,
                "relearn": N_RUNS,
                "report": 1,
                "all": 1,
            },
        ),
        # the report's own code: the report only
        ("report.py", {"report": 1, "all": 1}),
    ],
    ids=["eval-tofu", "losses", "report"],
)
def test_a_code_edit_reruns_the_jobs_that_run_it(pipeline_copy, repo_copy, edit, expected):
    _append(repo_copy / "blur_core" / edit, "\n_CODE_EDIT_FOR_THE_TEST = 1\n")
    jobs = planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy))
    assert jobs == expected, jobs


def test_comments_docs_and_a_switched_off_fingerprint_rerun_nothing(pipeline_copy, repo_copy):
    assert planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy)) == {}  # the same code
    _append(repo_copy / "blur_core/losses.py", "\n# a comment line only\n\n")
    (repo_copy / "README.md").write_text("an edited README\n")
    assert planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy)) == {}
    _append(repo_copy / "blur_core/losses.py", "\n_CODE_EDIT_FOR_THE_TEST = 1\n")
    assert planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy))["unlearn"] == N_RUNS
    # code_rerun: false freezes the recorded fingerprints: edits rerun nothing, and switching it
    # off reruns nothing either; back on, the edits count
    (repo_copy / "blur_core/losses.py").write_text((REPO / "blur_core/losses.py").read_text())
    assert planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy)) == {}
    _edit(pipeline_copy, lambda c: c.update(code_rerun=False))
    _append(repo_copy / "blur_core/eval/tofu.py", "\n_ANOTHER_EDIT = 2\n")
    assert planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy)) == {}
    _edit(pipeline_copy, lambda c: c.update(code_rerun=True))
    assert "evaluate" in planned_jobs(run_snakemake(pipeline_copy, "-n", repo=repo_copy))


def test_every_output_json_carries_provenance(pipeline_dir):
    res = pipeline_dir / "results"
    files = [
        *res.rglob("summary.json"),  # training runs (fine-tunes, unlearning, relearning)
        *res.rglob("eval.json"),
        *(p for p in res.rglob("suites/*.json")),
    ]
    assert len(files) > 20
    for path in files:
        prov = json.loads(path.read_text()).get("provenance")
        assert prov, f"{path} has no provenance"
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
            assert key in prov, (path, key)
        assert len(prov["code"]) == 16 and prov["packages"]["torch"], path
        assert prov["data"] or "suites" in path.parts, f"{path}: no data hashes"
    md = (res / "report/summary.md").read_text()
    assert "## Provenance" in md and "evaluation code: fingerprint" in md and "Warning" not in md


def test_a_study_archive_unpacks_and_plans_the_same_study(tmp_path):
    import tarfile

    from blur_core.archive import make_archive

    out = make_archive(tmp_path / "study.tar.gz", REPO / "configs/demo-all-tasks.yaml")
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    root = tmp_path / "unpacked" / "blur-study"
    manifest = json.loads((root / "MANIFEST.json").read_text())
    assert manifest["config"] == "configs/demo-all-tasks.yaml" and "unlearn" in manifest["code"]
    assert (root / "Snakefile").is_file() and (root / "blur_core/pipeline/study.py").is_file()
    assert not list(root.rglob("*.safetensors")) and not (root / "results").exists()
    # the receiver's dry run from the unpacked code plans the whole study
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(root / manifest["config"], work / "study.yaml")
    jobs = planned_jobs(run_snakemake(work, "-n", configfile="study.yaml", repo=root))
    assert jobs["unlearn"] == 6 and jobs["report"] == 1, jobs
