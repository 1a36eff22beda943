"""Pipeline tests run the real Snakefile with a CI-sized config in a temporary directory."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# small enough for CI on 2 cores, same shape as the default experiment; trained long enough
# that the target has memorised the forget set (test_the_benchmark_tells_the_truth)
CI_CONFIG = {
    "results": "results",
    "benchmarks": {
        "embedded": {
            "kind": "embedded",
            "forget_split": "forget10",
            "people": 20,
            "questions_per_person": 3,
            "seed": 0,
        }
    },
    "models": {"tiny": {"kind": "embedded", "hidden_size": 64, "layers": 2, "seed": 0}},
    "experiments": [{"benchmark": "embedded", "model": "tiny"}],
    "finetune": {
        "epochs": 60,
        "micro_batch_size": 20,
        "lr": 3e-3,
        "warmup_steps": 10,
        "max_length": 48,
    },
    "unlearn": {
        "seeds": [0],
        "max_length": 48,
        "train": {"max_steps": 4, "micro_batch_size": 4, "optimizer": "adamw", "lr": 1e-3},
    },
    "methods": {
        "blur_npo": {
            "method": "blur",
            "fixed": {"forget_loss": "npo", "retain_loss": "nll"},
            "grid": {"gamma": [0.1, 0.3]},
        },
        "graddiff": {"method": "graddiff", "grid": {"retain_weight": [1.0]}},
    },
    "evaluate": {"batch_size": 16, "max_new_tokens": 8, "max_length": 64, "limit": 8},
    "evaluations": {
        "forget_mc": {"kind": "tofu_mc", "set": "forget"},
        "memorisation": {"kind": "memorisation"},
    },
    "relearn": {"steps": [3], "fraction": 0.5, "lr": 3e-3, "micro_batch_size": 4},
}
N_RUNS = 3
SHARED_DATA = Path(os.environ.get("BLUR_SHARED_DATA", REPO.parent / "shared" / "data"))
if SHARED_DATA.is_dir():
    # the real-data suites run too (a few items; the tiny word-level model maps most of their
    # words to [UNK], so the numbers mean nothing: this checks loaders, rules and report)
    CI_CONFIG["evaluations"].update(
        {
            "wmdp_bio": {
                "kind": "wmdp",
                "source": str(SHARED_DATA / "wmdp"),
                "subset": "bio",
                "limit": 4,
            },
            "mmlu": {"kind": "mmlu", "source": str(SHARED_DATA / "mmlu"), "limit": 4},
            "muse_news": {
                "kind": "muse",
                "source": str(SHARED_DATA / "muse_news"),
                "limit": 3,
                "verbmem_max_new_tokens": 6,
                "max_new_tokens": 6,
                "privleak_max_length": 48,
            },
        }
    )


def snakemake_bin() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    return str(exe) if exe.exists() else "snakemake"


def run_snakemake(
    workdir: Path,
    *args: str,
    timeout: int = 900,
    configfile: str = "config.yaml",
    repo: Path = REPO,
) -> subprocess.CompletedProcess:
    """snakemake on ``repo``'s Snakefile (and its blur_core: a copy of the repository, or a
    worktree, runs its own code), ``workdir/configfile`` and results in ``workdir``; never
    hangs."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TOKENIZERS_PARALLELISM": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # always first on the path: the jobs run this checkout's blur_core even when the
    # environment's editable install points at another checkout (a git worktree)
    env["PYTHONPATH"] = f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    cmd = [
        snakemake_bin(),
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / configfile),
        "--workflow-profile",
        str(REPO / "workflow/profiles/default"),
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir
    )


def write_config(workdir: Path, cfg: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table ({} when nothing to do)."""
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    text = proc.stdout + proc.stderr
    if "Nothing to be done" in text:
        return {}
    m = re.search(r"Job stats:\n(.*?)\n\s*total\s+\d+", text, re.S)
    if not m:
        raise AssertionError(f"no job stats in dry-run output:\n{text[-3000:]}")
    jobs = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    """A completed run of the CI-sized pipeline (shared by the rerun-scope tests)."""
    workdir = tmp_path_factory.mktemp("pipeline")
    write_config(workdir, copy.deepcopy(CI_CONFIG))
    proc = run_snakemake(workdir)
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}" for p in (workdir / "results/logs").rglob("*.log")
        )
        raise AssertionError(f"pipeline failed:\n{proc.stderr[-6000:]}\n{logs[-8000:]}")
    return workdir


@pytest.fixture()
def pipeline_copy(pipeline_dir, tmp_path) -> Path:
    """A private copy of the completed pipeline (mtimes and .snakemake metadata kept)."""
    dst = tmp_path / "p"
    shutil.copytree(pipeline_dir, dst, symlinks=True, copy_function=shutil.copy2)
    return dst
