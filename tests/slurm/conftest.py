"""SLURM tests: a real single-node cluster (tests/slurm/cluster.py), brought up once per
session, and the CI-sized pipeline run through `snakemake --profile <test variant of slurm/>`.

Skipped (with the reason) where slurm-wlm is not installed or we are not root; CI sets
BLUR_REQUIRE_SLURM=1 so that a missing cluster fails instead of skipping.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.pipeline.conftest import CI_CONFIG, REPO, snakemake_bin, write_config
from tests.slurm.cluster import LocalSlurm, why_unavailable

# CI pipeline + GPUs for unlearn + checkpoints; graddiff runs longer (a job to kill mid-run)
SLURM_CONFIG = copy.deepcopy(CI_CONFIG)
SLURM_CONFIG["unlearn"]["gpus"] = 1
SLURM_CONFIG["unlearn"]["train"]["save_every"] = 2
SLURM_CONFIG["methods"]["graddiff"]["train"] = {"max_steps": 300, "save_every": 10}
LONG_RUN = "results/embedded/tiny/runs/graddiff/retain_weight=1@seed=0"
# one cheap suite (its rule must go to a GPU too); the real-data suites and relearning
# are covered by tests/pipeline and only add SLURM polling time here
SLURM_CONFIG["evaluations"] = {"memorisation": {"kind": "memorisation"}}
SLURM_CONFIG["relearn"] = {"steps": []}

# the test variant of slurm/config.yaml: what a cluster without slurmdbd and a 2-core
# node needs (docs/architecture.md section 7), everything else as in the real profile
PROFILE_OVERRIDES = {
    "jobs": 4,
    "latency-wait": 5,
    "retries": 0,
    "slurm-status-command": "squeue",
    "slurm-init-seconds-before-status-checks": 2,
    "slurm-keep-successful-logs": True,
    "slurm-requeue": True,
}
SNAKEMAKE_TIMEOUT = 900


def _test_profile(dst: Path) -> Path:
    prof = yaml.safe_load((REPO / "slurm/config.yaml").read_text())
    prof.update(PROFILE_OVERRIDES)
    prof["default-resources"] = {"runtime": 30, "mem_mb": 1000}
    prof["set-threads"] = {
        "unlearn": 1,
        "finetune": 2,
        "evaluate": 1,
        "evaluate_suites": 1,
        "relearn": 1,
    }
    for res in prof["set-resources"].values():
        res["mem_mb"] = 1000
        res["runtime"] = 30
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.yaml").write_text(yaml.safe_dump(prof, sort_keys=False))
    return dst


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    reason = why_unavailable()
    if reason:
        if os.environ.get("BLUR_REQUIRE_SLURM") == "1":
            pytest.fail(f"BLUR_REQUIRE_SLURM=1 but no SLURM test cluster: {reason}")
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm-state"))
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_profile(tmp_path_factory) -> Path:
    return _test_profile(tmp_path_factory.mktemp("profile") / "slurm")


def snakemake_cmd(
    workdir: Path, profile: Path, *args: str, timeout: int = SNAKEMAKE_TIMEOUT
) -> list[str]:
    # `timeout -k`: a hung snakemake is killed (never hangs the test session)
    return [
        "timeout",
        "-k",
        "20",
        str(timeout),
        snakemake_bin(),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--profile",
        str(profile),
        "--workflow-profile",
        str(REPO / "workflow/profiles/default"),
        *args,
    ]


def snakemake_env() -> dict:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # gloo between the ranks of a multi-node job: over loopback (the test nodes are
        # 127.0.0.2 / 127.0.0.3), never another interface of this machine
        "GLOO_SOCKET_IFNAME": "lo",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def run_slurm_snakemake(
    workdir: Path,
    profile: Path,
    *args: str,
    log_name: str = "snakemake.log",
    timeout: int = SNAKEMAKE_TIMEOUT,
) -> tuple[int, str]:
    """Run snakemake (bounded); its output goes to ``workdir/log_name`` and is returned."""
    out = workdir / log_name
    with open(out, "w") as fh:
        rc = subprocess.run(
            snakemake_cmd(workdir, profile, *args, timeout=timeout),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=snakemake_env(),
            cwd=workdir,
            timeout=timeout + 60,
        ).returncode
    return rc, out.read_text(errors="replace")


def logs_of(workdir: Path) -> str:
    parts = []
    for p in sorted((workdir / "results/logs").rglob("*.log")) + sorted(
        (workdir / ".snakemake/slurm_logs").rglob("*.log")
    ):
        parts.append(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}")
    return "\n".join(parts)[-12000:]


@pytest.fixture(scope="session")
def slurm_pipeline(slurm_cluster, slurm_profile, tmp_path_factory):
    """The CI-sized pipeline run end to end on the local cluster: (workdir, output, seconds)."""
    workdir = tmp_path_factory.mktemp("slurm-pipeline")
    write_config(workdir, copy.deepcopy(SLURM_CONFIG))
    t0 = time.monotonic()
    rc, out = run_slurm_snakemake(workdir, slurm_profile, "--verbose")
    wall = time.monotonic() - t0
    if rc != 0:
        raise AssertionError(
            f"pipeline on SLURM failed (rc {rc}):\n{out[-6000:]}\n{logs_of(workdir)}\n"
            f"slurmctld:\n{slurm_cluster.tail('slurmctld')}"
        )
    print(f"\nSLURM pipeline: {wall:.0f} s")
    return workdir, out, wall


# ------------------------------------------------------------------ helpers of the tests
def copy_workdir(workdir: Path, dst: Path) -> Path:
    shutil.copytree(workdir, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


def weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(ref_run: Path, run: Path) -> None:
    a, b = weights(ref_run / "model"), weights(run / "model")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), (
        f"weights of {run} differ from the uninterrupted run {ref_run}"
    )


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen | None = None):
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


def running_unlearn_job() -> str | None:
    p = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=10
    )
    for line in p.stdout.splitlines():
        job_id, comment, state = line.split("|")
        if comment.startswith("rule_unlearn") and state == "RUNNING":
            return job_id
    return None


def attempts_in(log: str) -> list[tuple[str, str]]:
    """(SLURM job id, CUDA_VISIBLE_DEVICES) of each attempt an unlearn log records."""
    return re.findall(r"=== unlearn attempt .* SLURM_JOB_ID=(\d+) CUDA_VISIBLE_DEVICES=(\S+)", log)


def interrupt_run(
    profile: Path, work: Path, run_rel: str, log_file: Path, command: list[str], wait_s: int
) -> tuple[int, str, Path]:
    """Start snakemake on the unlearn run ``run_rel`` (from scratch) in ``work``, wait for
    its first checkpoint, run ``command + [job id]`` on the running unlearn job (scancel /
    scontrol requeue) and wait at most ``wait_s`` for snakemake to end.
    Returns (rc, job id, run dir)."""
    run = work / run_rel
    shutil.rmtree(run)
    with open(log_file, "w") as fh:
        proc = subprocess.Popen(
            snakemake_cmd(work, profile, f"{run_rel}/model", timeout=600),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=snakemake_env(),
            cwd=work,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: list(run.glob("checkpoints/step-*/state.pt")), 300, "a first checkpoint", proc
        )
        job_id = wait_for(running_unlearn_job, 30, "the running unlearn job in squeue", proc)
        assert not (run / "summary.json").exists(), f"the run finished before `{' '.join(command)}`"
        subprocess.run([*command, job_id], check=True, timeout=10)
        rc = proc.wait(timeout=wait_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)
    return rc, job_id, run
