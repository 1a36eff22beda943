"""SLURM tests: a real single-node cluster (tests/slurm/cluster.py), brought up once per
session, and the CI-sized pipeline run through `snakemake --profile <test variant of slurm/>`.

Skipped (with the reason) where slurm-wlm is not installed or we are not root; CI sets
BLUR_REQUIRE_SLURM=1 so that a missing cluster fails instead of skipping.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

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
