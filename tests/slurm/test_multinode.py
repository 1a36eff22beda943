"""Beyond one node: DeepSpeed ZeRO-3 BLUR across the two nodes of the local SLURM cluster
(tests/slurm/cluster.py: slurmd n1 on 127.0.0.2 and n2 on 127.0.0.3), submitted by
`snakemake --profile slurm` with `unlearn.nodes: 2`, one rank per node, gloo on CPU; its
requeue across nodes; and the profile's `retries` resubmission of a failed job."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import REPO, write_config
from tests.slurm.conftest import (
    SLURM_CONFIG,
    attempts_in,
    copy_workdir,
    interrupt_run,
    logs_of,
    run_slurm_snakemake,
    same_weights,
    weights,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ADAM_TOL = 1e-5  # as tests/integration/test_zero.py's 2-rank ZeRO-3 AdamW comparison
BLUR = {"method": "blur", "fixed": {"forget_loss": "npo", "retain_loss": "nll"}}
MULTINODE_CONFIG = copy.deepcopy(SLURM_CONFIG)
MULTINODE_CONFIG["unlearn"].update(
    backend="deepspeed", deepspeed_config="zero3", nodes=2, gpus=1
)  # gpus: per node, so one rank on each node; micro_batch_size 4 per rank: 8 per step
MULTINODE_CONFIG["methods"] = {
    "blur_npo": {**BLUR, "grid": {"gamma": [0.3]}},
    # long enough to requeue after a checkpoint
    "blur_long": {**BLUR, "grid": {"gamma": [0.1]}, "train": {"max_steps": 60, "save_every": 5}},
}
SHORT = "results/embedded/tiny/runs/blur_npo/gamma=0.3@seed=0"
LONG = "results/embedded/tiny/runs/blur_long/gamma=0.1@seed=0"
NODE_LINE = r"blur_core\.slurm: node (n[12]) \((127\.0\.0\.[23])\) is node rank ([01]) of 2"


def _log(work: Path, run_rel: str) -> str:
    entry_tag = run_rel.split("runs/")[1]
    return (work / f"results/logs/unlearn/embedded/tiny/{entry_tag}.log").read_text()


@pytest.fixture(scope="module")
def multinode(slurm_pipeline, slurm_profile, tmp_path_factory):
    """Both runs of MULTINODE_CONFIG on 2 nodes, from the SLURM pipeline's data and target
    model (only unlearn + convert jobs run): (workdir, snakemake output, seconds)."""
    work = copy_workdir(slurm_pipeline[0], tmp_path_factory.mktemp("multinode") / "w")
    write_config(work, copy.deepcopy(MULTINODE_CONFIG))
    t0 = time.monotonic()
    rc, out = run_slurm_snakemake(
        work, slurm_profile, f"{SHORT}/model", f"{LONG}/model", "--verbose", timeout=900
    )
    wall = time.monotonic() - t0
    if rc != 0:
        unlearn_logs = "\n".join(
            f"--- {p}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((work / "results/logs/unlearn").rglob("*.log"))
        )
        raise AssertionError(f"{out[-4000:]}\n{unlearn_logs}\n{logs_of(work)[-4000:]}")
    print(f"\ntwo-node runs (2 jobs): {wall:.0f} s")
    return work, out, wall


def _single_process_reference(work: Path, out_dir: Path) -> Path:
    """The SHORT run's own config (built by the library, as the rule does) on one process:
    local backend, the global batch of the two ranks in one micro-batch."""
    from snakemake.utils import validate

    from blur_core.pipeline import Study

    cfg = yaml.safe_load((work / "config.yaml").read_text())
    validate(cfg, str(REPO / "workflow/schemas/config.schema.yaml"), set_default=True)
    study = Study(cfg)
    (run,) = [r for r in study.runs.values() if r.dir == SHORT]
    rc = study.unlearn_config(run)
    train = {k: v for k, v in rc["train"].items() if k not in ("backend", "deepspeed_config")}
    train["micro_batch_size"] *= 2
    rc.update(train=train, output_dir=str(out_dir), final_model_dir=str(out_dir / "model"))
    p = subprocess.run(
        [sys.executable, "-m", "blur_core", "unlearn", "--config-json", json.dumps(rc)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return out_dir


def test_two_node_zero3_blur_equals_single_process(multinode, tmp_path):
    work, out, _ = multinode
    sbatch = [ln for ln in out.splitlines() if "sbatch call:" in ln and "rule_unlearn" in ln]
    assert len(sbatch) == 2, "\n".join(sbatch)
    assert all("--nodes=2" in ln and "--gres=gpu:1" in ln for ln in sbatch), "\n".join(sbatch)
    assert not re.search(r"rule_(finetune|prepare)", out), "only unlearn + convert should run"
    log = _log(work, SHORT)
    nodes = sorted(set(re.findall(NODE_LINE, log)))
    assert nodes == [("n1", "127.0.0.2", "0"), ("n2", "127.0.0.3", "1")], log[-3000:]
    summary = json.loads((work / SHORT / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["backend"] == "deepspeed", summary
    assert summary["zero_stage"] == 3

    t0 = time.monotonic()
    ref = _single_process_reference(work, tmp_path / "single")
    ref_wall = time.monotonic() - t0
    w_ref, w_two = weights(ref / "model"), weights(work / SHORT / "model")
    target = weights(work / "results/embedded/tiny/finetune/target/model")
    update = max((w_ref[k].float() - target[k].float()).abs().max().item() for k in w_ref)
    diff = max((w_ref[k].float() - w_two[k].float()).abs().max().item() for k in w_ref)
    log_two = [
        json.loads(ln)
        for ln in (work / SHORT / "train_log.jsonl").read_text().splitlines()
        if ln.strip()
    ]
    log_ref = [
        json.loads(ln) for ln in (ref / "train_log.jsonl").read_text().splitlines() if ln.strip()
    ]
    dxi = max(abs(a["xi"] - b["xi"]) for a, b in zip(log_two, log_ref))
    print(
        f"\ntwo nodes vs one process ({len(log_two)} AdamW steps): max|dW|={diff:.3g} "
        f"max|dxi|={dxi:.3g} (update {update:.3g}); nodes {nodes}; "
        f"single-process run {ref_wall:.0f} s"
    )
    assert len(log_two) == len(log_ref) == 4
    assert update > 1e-4, f"the reference run barely moved the weights ({update}): no signal"
    assert diff <= ADAM_TOL and dxi <= ADAM_TOL


def test_requeued_two_node_job_resumes_to_the_same_weights(multinode, slurm_profile, tmp_path):
    """`scontrol requeue` of the running 2-node job after a checkpoint: SLURM restarts it
    (same job id, both nodes again), it resumes and ends with the uninterrupted run's weights."""
    ref = multinode[0]
    work = copy_workdir(ref, tmp_path / "w")
    t0 = time.monotonic()
    rc, job_id, run = interrupt_run(
        slurm_profile, work, LONG, work / "requeue.log", ["scontrol", "requeue"], wait_s=600
    )
    wall = time.monotonic() - t0
    out = (work / "requeue.log").read_text(errors="replace")
    assert rc == 0, f"{out[-4000:]}\n{logs_of(work)}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from"] > 0 and summary["world_size"] == 2, summary
    same_weights(ref / LONG, run)
    # Snakemake truncates the rule's log when the requeued job starts again: what is left is
    # the attempt that finished, under the same job id, on both nodes again
    log = _log(work, LONG)
    attempts = attempts_in(log)
    assert [a[0] for a in attempts] == [job_id], log[-3000:]
    assert sorted({m[0] for m in re.findall(NODE_LINE, log)}) == ["n1", "n2"], log[-3000:]
    print(
        f"\nrequeued 2-node job {job_id} after a checkpoint: resumed_from="
        f"{summary['resumed_from']}, same weights as the uninterrupted run; {wall:.0f} s"
    )
