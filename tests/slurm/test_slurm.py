"""`snakemake --profile slurm` against a real local SLURM (see conftest.py): GPU requests
and CUDA_VISIBLE_DEVICES, a failing rule, and a killed unlearn job resubmitted by the
profile's `retries` and resuming. (Two nodes, and requeue: test_multinode.py.)"""

from __future__ import annotations

import json
import os
import re
import time

import pytest
import yaml

from tests.slurm.conftest import (
    LONG_RUN,
    _test_profile,
    copy_workdir,
    interrupt_run,
    logs_of,
    run_slurm_snakemake,
    same_weights,
)

# the session fixture runs the whole pipeline on SLURM (~5 min on 2 cores) inside the first test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RUNS = ["blur_npo/gamma=0.1@seed=0", "blur_npo/gamma=0.3@seed=0", "graddiff/retain_weight=1@seed=0"]


def test_pipeline_on_slurm_requests_gpus_and_sees_them(slurm_pipeline):
    workdir, out, wall = slurm_pipeline
    res = workdir / "results"
    for name in ("summary.csv", "summary.md", "tradeoff.png"):
        assert (res / "report" / name).stat().st_size > 0
    # every job went through sbatch; unlearn jobs with a GPU request, CPU rules without
    sbatch = [ln for ln in out.splitlines() if "sbatch call:" in ln]
    unlearn_calls = [ln for ln in sbatch if "rule_unlearn" in ln]
    assert len(unlearn_calls) == len(RUNS), "\n".join(sbatch)
    assert all("--gres=gpu:1" in ln for ln in unlearn_calls), "\n".join(unlearn_calls)
    suite_calls = [ln for ln in sbatch if "rule_evaluate_suites" in ln]
    assert len(suite_calls) == 2 + len(RUNS) and all("--gres=gpu:1" in ln for ln in suite_calls)
    for rule in ("prepare_data", "prepare_embedded_model", "convert", "report"):
        calls = [ln for ln in sbatch if f"rule_{rule}" in ln]
        assert calls and not any("gpu" in ln.split("--wrap")[0] for ln in calls), "\n".join(calls)
    print("\n" + unlearn_calls[0].split("--wrap")[0].strip())
    # each unlearn process saw the GPU SLURM granted (fake: torch still runs on CPU)
    granted = set()
    for run in RUNS:
        log = (res / "logs/unlearn/embedded/tiny" / f"{run}.log").read_text()
        m = re.search(r"SLURM_JOB_ID=(\d+) CUDA_VISIBLE_DEVICES=(\S+) launch: python -m", log)
        assert m, log[-2000:]
        granted.add(m.group(2))
        assert m.group(2) in ("0", "1"), log[:500]
        summary = json.loads((res / "embedded/tiny/runs" / run / "summary.json").read_text())
        assert summary["resumed_from"] == 0 and summary["world_size"] == 1
        assert (res / "embedded/tiny/runs" / run / "model/model.safetensors").exists()
    print(next(ln for ln in log.splitlines() if "CUDA_VISIBLE_DEVICES" in ln))
    print(f"GPUs granted to the unlearn jobs: {sorted(granted)}; pipeline wall time {wall:.0f} s")


def test_failing_rule_on_slurm_exits_nonzero_and_names_its_log(
    slurm_pipeline, slurm_profile, tmp_path
):
    ref = slurm_pipeline[0]
    work = copy_workdir(ref, tmp_path / "w")
    # break the unlearn jobs' input model (mtime kept, so nothing upstream reruns)
    cfg = work / "results/embedded/tiny/finetune/target/model/config.json"
    st = cfg.stat()
    cfg.write_text("{ this is not json")
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    run = "blur_npo/gamma=0.1@seed=0"
    t0 = time.monotonic()
    rc, out = run_slurm_snakemake(
        work,
        slurm_profile,
        f"results/embedded/tiny/runs/{run}/model",
        "--forcerun",
        "unlearn",
        log_name="fail.log",
        timeout=300,
    )
    wall = time.monotonic() - t0
    assert rc != 0, out[-3000:]
    assert "Error in rule unlearn" in out, out[-3000:]
    assert f"results/logs/unlearn/embedded/tiny/{run}.log" in out, out[-3000:]
    assert ".snakemake/slurm_logs/rule_unlearn/" in out, out[-3000:]
    assert wall < 300
    print(f"\nfailing unlearn job: snakemake rc {rc} after {wall:.0f} s")


def test_profile_retries_resubmit_a_failed_job(slurm_pipeline, tmp_path):
    """The profile's `retries: 1`: an unlearn job that fails once (scancel after its first
    checkpoint: what a node failure or a time limit looks like to snakemake) is submitted
    again by the same snakemake run; its checkpoints survived the failure (they are not
    declared outputs), so it resumes and ends with the uninterrupted run's weights."""
    ref = slurm_pipeline[0]
    work = copy_workdir(ref, tmp_path / "w")
    profile = _test_profile(tmp_path / "profile" / "slurm")
    prof = yaml.safe_load((profile / "config.yaml").read_text())
    prof["retries"] = 1
    (profile / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    t0 = time.monotonic()
    rc, job_id, run = interrupt_run(
        profile, work, LONG_RUN, work / "retry.log", ["scancel"], wait_s=600
    )
    wall = time.monotonic() - t0
    out = (work / "retry.log").read_text(errors="replace")
    assert rc == 0, f"{out[-4000:]}\n{logs_of(work)}"
    # "Job 1 has been submitted with SLURM jobid 31 (log: .../rule_unlearn/...)"
    submitted = re.findall(
        r"has been submitted with SLURM jobid (\d+) \(log: [^)]*rule_unlearn/", out
    )
    assert "Trying to restart job" in out, out[-4000:]
    assert len(submitted) == 2 and submitted[0] == job_id != submitted[1], (submitted, job_id)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] > 0, summary
    same_weights(ref / LONG_RUN, run)
    print(
        f"\njob {job_id} cancelled after a checkpoint; resubmitted as {submitted[1]} (retries: 1), "
        f"resumed_from={summary['resumed_from']}; {wall:.0f} s"
    )
