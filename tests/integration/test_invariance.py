"""One BLUR step is the same update whatever the micro-batch / accumulation / rank split.

batch 8 x accum 1  ==  batch 1 x accum 8  ==  2 DDP ranks (gloo) x batch 2 x accum 2,
compared on final weights and on xi (max abs diff <= 1e-6), with SGD lr=1 and no clipping
so that any difference in the combined direction shows in the weights directly. PDU over two
steps (lr 0.3): the weights and the dual (logged per step and final) within the same 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from blur_core.train.config import parse_run_config
from blur_core.train.loop import run
from tests.integration.helpers import load_weights, max_abs_diff, read_log, run_config

METHODS = {
    "blur-npo-forget-priority": {
        "name": "blur",
        "forget_loss": "npo",
        "retain_loss": "nll",
        "gamma": 0.3,
    },
    # (not KL: at the first step the policy equals the reference, so the KL gradient is 0)
    "blur-simnpo-retain-priority": {
        "name": "blur",
        "forget_loss": "simnpo",
        "retain_loss": "nll",
        "variant": "retain_priority",
        "gamma": 0.5,
    },
    # a second answer per forget example and [n, 2] reference log-probs (DPO), and a frozen
    # teacher model's logits on the forget batch (UNDIAL)
    # (a small gamma: DPO's summed log-probs of a refusal the model never saw give a large F,
    # and at SGD lr 1 an update of ~8 would leave float32 rounding above the tolerance)
    "blur-dpo-idk": {"name": "blur", "forget_loss": "dpo", "retain_loss": "nll", "gamma": 0.01},
    "blur-undial": {
        "name": "blur",
        "forget_loss": "undial",
        "undial_beta": 3.0,
        "retain_loss": "nll",
        "gamma": 0.3,
    },
}
TOL = 1e-6


def _run_torchrun(cfg: dict, tmp_path, nproc: int = 2):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "blur_core",
        "unlearn",
        "--config",
        str(path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(
            f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )


@pytest.mark.parametrize("method_id", sorted(METHODS))
def test_one_step_invariant_to_batch_split_and_ranks(method_id, target_model, embedded, tmp_path):
    method = METHODS[method_id]
    splits = {
        "8x1": dict(micro_batch_size=8, grad_accum=1),
        "1x8": dict(micro_batch_size=1, grad_accum=8),
    }
    weights, xis = {}, {}
    for name, split in splits.items():
        out = tmp_path / name
        run(parse_run_config(run_config(target_model, out, method, embedded, **split)))
        weights[name], xis[name] = load_weights(out / "model"), read_log(out)[0]["xi"]

    out = tmp_path / "2ranks-2x2"
    _run_torchrun(
        run_config(target_model, out, method, embedded, micro_batch_size=2, grad_accum=2), tmp_path
    )
    weights["2x2x2"], xis["2x2x2"] = load_weights(out / "model"), read_log(out)[0]["xi"]
    assert read_log(out)[0]["step"] == 1
    assert not read_log(out)[0]["fallback"]

    start = load_weights(target_model)
    update = max_abs_diff(start, weights["8x1"])
    assert update > 1e-3, (
        f"the step barely moved the weights ({update}); the comparison would have no signal"
    )
    for name in ("1x8", "2x2x2"):
        diff = max_abs_diff(weights["8x1"], weights[name])
        print(
            f"{method_id} {name}: max|dW|={diff:.3g} |dxi|={abs(xis[name] - xis['8x1']):.3g} "
            f"update={update:.3g}"
        )
        assert diff <= TOL, f"{name} vs 8x1: max abs weight diff {diff:.3g} > {TOL}"
        assert abs(xis[name] - xis["8x1"]) <= TOL, f"{name}: xi {xis[name]} vs {xis['8x1']}"


def test_comparison_has_signal(target_model, embedded, tmp_path):
    """A different global batch (another seed) moves xi and the weights by far more than TOL."""
    method = METHODS["blur-npo-forget-priority"]
    runs = {}
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        run(parse_run_config(run_config(target_model, out, method, embedded, seed=seed)))
        runs[seed] = (load_weights(out / "model"), read_log(out)[0]["xi"])
    assert max_abs_diff(runs[0][0], runs[1][0]) > 100 * TOL
    assert abs(runs[0][1] - runs[1][1]) > 100 * TOL


# PDU: two steps, so that the second step's direction uses the dual raised by the first step's
# retain loss (eps below the retain NLL, a large step size: the dual moves by ~0.6)
PDU = {
    "name": "pdu",
    "forget_loss": "npo",
    "retain_loss": "nll",
    "retain_loss_eps": 0.0,
    "dual_step_size": 20.0,
    "dual_init": 0.5,
}


def _pdu_result(out) -> tuple[dict, list[float], float]:
    summary = json.loads((out / "summary.json").read_text())
    return load_weights(out / "model"), [r["dual"] for r in read_log(out)], summary["dual"]


def test_pdu_two_steps_invariant_to_batch_split_and_ranks(target_model, embedded, tmp_path):
    """PDU's dual ascends on the step's global-batch retain loss, so the dual and the weights
    after two SGD steps are the same for 8 x 1, 1 x 8 and 2 ranks x 2 x 2."""
    train = dict(max_steps=2, lr=0.3)
    results = {}
    runs = {
        "8x1": (PDU, 8, 1),
        "1x8": (PDU, 1, 8),
        # signal: half the dual step moves the step-2 dual by ~0.3, the weights by >> TOL
        "8x1-half-step": ({**PDU, "dual_step_size": PDU["dual_step_size"] / 2}, 8, 1),
    }
    for name, (method, mb, accum) in runs.items():
        out = tmp_path / name
        cfg = run_config(target_model, out, method, embedded, **train)
        cfg["train"].update(micro_batch_size=mb, grad_accum=accum)
        run(parse_run_config(cfg))
        results[name] = _pdu_result(out)
    out = tmp_path / "2ranks-2x2"
    _run_torchrun(
        run_config(target_model, out, PDU, embedded, micro_batch_size=2, grad_accum=2, **train),
        tmp_path,
    )
    results["2x2x2"] = _pdu_result(out)

    ref_w, ref_duals, ref_final = results["8x1"]
    update = max_abs_diff(load_weights(target_model), ref_w)
    assert update > 1e-3, f"two steps barely moved the weights ({update}): no signal"
    assert ref_duals[0] == PDU["dual_init"] and ref_duals[1] > PDU["dual_init"] + 0.1, ref_duals
    signal = max_abs_diff(ref_w, results["8x1-half-step"][0])
    assert signal > 100 * TOL, f"the dual barely changes the weights ({signal:.3g}): no signal"
    for name in ("1x8", "2x2x2"):
        weights, duals, final = results[name]
        diff = max_abs_diff(ref_w, weights)
        d_dual = max(abs(a - b) for a, b in zip([*duals, final], [*ref_duals, ref_final]))
        print(
            f"pdu {name}: max|dW|={diff:.3g} max|d dual|={d_dual:.3g} update={update:.3g} "
            f"(half dual step: max|dW|={signal:.3g})"
        )
        assert diff <= TOL, f"{name} vs 8x1: max abs weight diff {diff:.3g} > {TOL}"
        assert d_dual <= TOL, f"{name}: duals {[*duals, final]} vs {[*ref_duals, ref_final]}"
