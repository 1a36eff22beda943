"""`snakemake --profile slurm` against a real local SLURM (see conftest.py): GPU requests
and CUDA_VISIBLE_DEVICES, resume of a killed unlearn job, and a failing rule."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.slurm.conftest import (
    LONG_RUN,
    logs_of,
    run_slurm_snakemake,
    snakemake_cmd,
    snakemake_env,
)

# the session fixture runs the whole pipeline on SLURM (~5 min on 2 cores) inside the first test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RUNS = ["blur_npo/gamma=0.1@seed=0", "blur_npo/gamma=0.3@seed=0", "graddiff/retain_weight=1@seed=0"]


def _copy(workdir: Path, dst: Path) -> Path:
    shutil.copytree(workdir, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


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


def _wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"snakemake exited (rc {proc.returncode}) while waiting for {what}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _running_unlearn_job() -> str | None:
    p = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=10
    )
    for line in p.stdout.splitlines():
        job_id, comment, state = line.split("|")
        if comment.startswith("rule_unlearn") and state == "RUNNING":
            return job_id
    return None


def _attempts(log: str) -> list[str]:
    return re.findall(r"=== unlearn attempt .* SLURM_JOB_ID=(\d+) CUDA_VISIBLE_DEVICES=(\S+)", log)


def _interrupt_long_run(
    slurm_profile, work: Path, log_file: Path, command: list[str], wait_s: int
) -> tuple[int, str, Path]:
    """Start snakemake on LONG_RUN (from scratch) in ``work``, wait for its first checkpoint,
    run ``command + [job id]`` on the running unlearn job (scancel / scontrol requeue) and
    wait at most ``wait_s`` for snakemake to end. Returns (rc, job id, run dir)."""
    run = work / LONG_RUN
    shutil.rmtree(run)
    with open(log_file, "w") as fh:
        proc = subprocess.Popen(
            snakemake_cmd(work, slurm_profile, f"{LONG_RUN}/model", timeout=600),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=snakemake_env(),
            cwd=work,
            start_new_session=True,
        )
    try:
        _wait_for(
            lambda: list(run.glob("checkpoints/step-*/state.pt")), 300, "a first checkpoint", proc
        )
        job_id = _wait_for(_running_unlearn_job, 30, "the running unlearn job in squeue", proc)
        assert not (run / "summary.json").exists(), f"the run finished before `{' '.join(command)}`"
        subprocess.run([*command, job_id], check=True, timeout=10)
        rc = proc.wait(timeout=wait_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    return rc, job_id, run


def _assert_same_weights(ref: Path, run: Path) -> None:
    a, b = _weights(ref / LONG_RUN / "model"), _weights(run / "model")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), (
        "resumed weights differ from the uninterrupted run"
    )


def test_killed_unlearn_job_resumes_from_checkpoint(slurm_pipeline, slurm_profile, tmp_path):
    """scancel an unlearn job mid-run: snakemake fails (no hang), the checkpoints survive
    (they are not declared outputs), and a rerun continues from the latest one to weights
    identical to the uninterrupted run's."""
    ref = slurm_pipeline[0]
    work = _copy(ref, tmp_path / "w")
    target = f"{LONG_RUN}/model"
    first = work / "first.log"
    rc, job_id, run = _interrupt_long_run(slurm_profile, work, first, ["scancel"], wait_s=300)
    out = first.read_text(errors="replace")
    assert rc != 0, out[-3000:]
    assert f"results/logs/unlearn/embedded/tiny/{LONG_RUN.split('runs/')[1]}.log" in out, out[
        -3000:
    ]
    steps = sorted(
        int(p.name.split("-")[1])
        for p in run.glob("checkpoints/step-*")
        if (p / "state.pt").exists()
    )
    assert steps, "checkpoints did not survive the failed job"
    assert not (run / "final").exists() and not (run / "summary.json").exists()

    rc, out2 = run_slurm_snakemake(work, slurm_profile, target, log_name="second.log", timeout=600)
    assert rc == 0, f"{out2[-4000:]}\n{logs_of(work)}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] >= steps[-1] > 0, (summary, steps)
    _assert_same_weights(ref, run)
    log = (
        work / f"results/logs/unlearn/embedded/tiny/{LONG_RUN.split('runs/')[1]}.log"
    ).read_text()
    attempts = _attempts(log)  # (Snakemake removes the killed job's log with its outputs)
    assert attempts and attempts[-1][0] != job_id, log[-3000:]
    print(
        f"\nkilled job {job_id} after checkpoint step {steps[-1]}; rerun "
        f"resumed_from={summary['resumed_from']}; "
        f"attempts (job id, CUDA_VISIBLE_DEVICES): {attempts}"
    )


def test_failing_rule_on_slurm_exits_nonzero_and_names_its_log(
    slurm_pipeline, slurm_profile, tmp_path
):
    ref = slurm_pipeline[0]
    work = _copy(ref, tmp_path / "w")
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


def test_requeued_unlearn_job_resumes_in_the_same_snakemake_run(
    slurm_pipeline, slurm_profile, tmp_path
):
    """Preemption as SLURM does it: `scontrol requeue` kills the running unlearn job and
    starts it again under the same job id (profile: slurm-requeue); snakemake keeps waiting,
    the second start resumes from the checkpoint, and the weights equal the uninterrupted run's."""
    ref = slurm_pipeline[0]
    work = _copy(ref, tmp_path / "w")
    log_file = work / "requeue.log"
    rc, job_id, run = _interrupt_long_run(
        slurm_profile, work, log_file, ["scontrol", "requeue"], wait_s=600
    )
    out = log_file.read_text(errors="replace")
    assert rc == 0, f"{out[-4000:]}\n{logs_of(work)}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] > 0, summary
    _assert_same_weights(ref, run)
    log = (
        work / f"results/logs/unlearn/embedded/tiny/{LONG_RUN.split('runs/')[1]}.log"
    ).read_text()
    attempts = _attempts(log)
    assert attempts and {a[0] for a in attempts} == {job_id}, log[-3000:]  # same job id: requeued
    print(f"\nrequeued job {job_id}; resumed_from={summary['resumed_from']}; attempts: {attempts}")
